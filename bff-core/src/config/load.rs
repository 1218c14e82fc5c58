//! Loading: TOML text, then `BFF_*` environment overrides, then flag overrides, then validation.

use std::fmt;

use toml::{Table, Value};

use super::Config;

/// Where a configuration came from, for error messages.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// A name for people: the file path, or `built-in config/mobile.toml`.
    pub name: String,
    /// The TOML text.
    pub text: String,
}

/// The OpenTelemetry SDK's standard variables a BFF honours, and the keys they set
/// (`OTEL_EXPORTER_OTLP_HEADERS` is read by the exporter itself).
const OTEL_VARIABLES: [(&str, &str); 4] = [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "tracing.otlp_endpoint"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "tracing.otlp_traces_endpoint"),
    ("OTEL_SERVICE_NAME", "tracing.service_name"),
    ("OTEL_TRACES_SAMPLER_ARG", "tracing.sample_ratio"),
];

/// Key/value overrides applied over the file: environment variables and flags.
///
/// Keys are dotted paths (`upstreams.users.url`); values are parsed as TOML where they can be
/// (`8`, `true`) and taken as strings otherwise (`2s`, `127.0.0.1:8081`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    origin: String,
    /// Applied only where the key's parent section exists in the file (embedded upstreams retarget the
    /// upstreams a BFF has, without adding the ones it does not call).
    only_existing: bool,
}

impl Overrides {
    /// Collects `BFF_*` variables from an environment given as pairs (pass `std::env::vars()`).
    ///
    /// `BFF_UPSTREAMS__USERS__URL=http://…` sets `upstreams.users.url`. The OpenTelemetry
    /// variables `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_SERVICE_NAME` and `OTEL_TRACES_SAMPLER_ARG` set `tracing.otlp_endpoint`,
    /// `.otlp_traces_endpoint`, `.service_name` and `.sample_ratio` (a `BFF_` variable for the
    /// same key wins). A name the file spells with `-` (`[rate_limits.per-user]`) is addressed
    /// with `_`: `BFF_RATE_LIMITS__PER_USER__RATE`.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut overrides = Self::default();
        let mut standard = Self::default();
        for (name, value) in vars {
            if let Some(key) = OTEL_VARIABLES.iter().find(|(n, _)| *n == name).map(|(_, key)| key) {
                standard.set(*key, value, format!("environment variable {name}"));
                continue;
            }
            let Some(rest) = name.strip_prefix("BFF_") else {
                continue;
            };
            if rest.is_empty() || rest == "CONFIG" {
                continue;
            }
            let key = rest.split("__").map(str::to_lowercase).collect::<Vec<_>>().join(".");
            overrides.set(key, value, format!("environment variable {name}"));
        }
        // A `BFF_` variable is more specific than a standard one: applied after it.
        standard.extend(overrides);
        standard
    }

    /// Sets one key, `origin` naming where it came from (`--listen`).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>, origin: impl Into<String>) -> &mut Self {
        self.entries.push(Entry { key: key.into(), value: value.into(), origin: origin.into(), only_existing: false });
        self
    }

    /// Sets one key only if its parent section (`upstreams.users` for `upstreams.users.url`)
    /// is in the file.
    pub fn set_existing(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        origin: impl Into<String>,
    ) -> &mut Self {
        self.entries.push(Entry { key: key.into(), value: value.into(), origin: origin.into(), only_existing: true });
        self
    }

    /// Adds all of `other` after these.
    pub fn extend(&mut self, other: Overrides) {
        self.entries.extend(other.entries);
    }

    /// Where the value at `key` came from: the last override that set it, a section above it
    /// (`upstreams.users` set whole), or something inside it (an unknown `memcached` section
    /// set through `BFF_MEMCACHED__URL`).
    fn origin_of(&self, key: &str) -> Option<&str> {
        // A key within another: a table's (`a.b` in `a`) or a list's item (`a[0]` in `a`).
        let within = |inner: &str, outer: &str| {
            inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        self.entries
            .iter()
            .rev()
            .find(|e| key == e.key || within(key, &e.key) || within(&e.key, key))
            .map(|e| e.origin.as_str())
    }
}

/// A configuration that cannot be used, with the key and the file or variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other source) the error is in.
    pub source: String,
    /// The dotted key at fault, when one is.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about one key of a source.
    pub fn key(source: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { source: source.into(), key: Some(key.into()), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "invalid configuration in {}: `{key}`: {}", self.source, self.message),
            None => write!(f, "invalid configuration in {}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses, overrides and validates a configuration.
pub fn load(source: &ConfigSource, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut table: Table = toml::from_str(&source.text).map_err(|e| ConfigError {
        source: source.name.clone(),
        key: None,
        message: e.to_string(),
    })?;
    // Each key as the file spells it (`per-user` for a variable's `PER_USER`), for applying and
    // for blaming.
    let mut overrides = overrides.clone();
    for entry in &mut overrides.entries {
        entry.key = spelled_as_in(&table, &entry.key);
        if entry.only_existing && !has_parent(&table, &entry.key) {
            continue;
        }
        set_path(&mut table, &entry.key, parse_value(&entry.value))
            .map_err(|message| ConfigError::key(entry.origin.clone(), entry.key.clone(), message))?;
    }
    let blame = |key: &str| match overrides.origin_of(key) {
        Some(origin) => origin.to_owned(),
        None => source.name.clone(),
    };
    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string().lines().next().unwrap_or_default().to_owned();
        ConfigError { source: blame(&key), key: (key != ".").then_some(key), message }
    })?;
    config.validate().map_err(|(key, message)| ConfigError::key(blame(&key), key, message))?;
    Ok(config)
}

/// `key` with each part that the table does not have but has with `-` for `_` (a variable
/// cannot spell a dash: `BFF_RATE_LIMITS__PER_USER__RATE` for `rate_limits.per-user.rate`)
/// spelled the table's way. A part the table has as it is stays as it is, and a new name keeps
/// its underscores.
fn spelled_as_in(table: &Table, key: &str) -> String {
    let mut current = Some(table);
    let mut parts = Vec::new();
    for part in key.split('.') {
        let spelled = match current {
            Some(t) if !t.contains_key(part) && part.contains('_') => {
                t.keys().find(|k| k.replace('-', "_") == part).map_or(part, String::as_str)
            }
            _ => part,
        };
        current = current.and_then(|t| t.get(spelled)).and_then(Value::as_table);
        parts.push(spelled);
    }
    parts.join(".")
}

fn parse_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn has_parent(table: &Table, key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    let mut current = table;
    for part in &parts[..parts.len().saturating_sub(1)] {
        match current.get(*part).and_then(Value::as_table) {
            Some(next) => current = next,
            None => return false,
        }
    }
    true
}

fn set_path(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|l| !l.is_empty()).ok_or("empty key")?;
    // An upstream's `url` and `urls` are one key spelled two ways: setting one replaces the other.
    let other_spelling = match (parts.as_slice(), last) {
        (["upstreams", _], "url") => Some("urls"),
        (["upstreams", _], "urls") => Some("url"),
        _ => None,
    };
    let mut current = table;
    for part in parts {
        let entry = current.entry(part.to_owned()).or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    if let Some(other) = other_spelling {
        current.remove(other);
    }
    current.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamProtocol;

    const BASE: &str = r#"
listen = "127.0.0.1:8081"
[defaults]
timeout = "500ms"
[upstreams.users]
url = "http://127.0.0.1:7001"
"#;

    fn source(text: &str) -> ConfigSource {
        ConfigSource { name: "config/test.toml".into(), text: text.into() }
    }

    #[test]
    fn loads_durations_and_defaults() {
        let config = load(&source(BASE), &Overrides::default()).unwrap();
        assert_eq!(config.defaults.timeout.as_millis(), 500);
        assert_eq!(config.defaults.deadline.as_secs(), 2);
        assert_eq!(config.upstreams["users"].url.first().as_str(), "http://127.0.0.1:7001/");
        // The defaults in code are the production ones: resilience and shedding on.
        assert_eq!(config.defaults.retry.attempts, 3);
        assert!(config.defaults.breaker.enabled);
        assert_eq!(config.defaults.max_in_flight, 1024);
        assert_eq!(config.server.max_in_flight_requests, 4096);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = Overrides::from_env([
            ("BFF_UPSTREAMS__USERS__URL".to_owned(), "http://127.0.0.1:9001".to_owned()),
            ("BFF_DEFAULTS__CONCURRENCY".to_owned(), "3".to_owned()),
            ("BFF_LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        let config = load(&source(BASE), &env).unwrap();
        assert_eq!(config.upstreams["users"].url.first().port(), Some(9001));
        assert_eq!(config.defaults.concurrency.get(), 3);
        assert_eq!(config.listen.port(), 9999);
    }

    #[test]
    fn the_standard_opentelemetry_variables_set_the_tracing_keys_and_bff_ones_win() {
        let env = Overrides::from_env([
            ("BFF_TRACING__SAMPLE_RATIO".to_owned(), "0.5".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), "http://collector:4318".to_owned()),
            ("OTEL_SERVICE_NAME".to_owned(), "checkout-bff".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG".to_owned(), "0.01".to_owned()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(), "https://otlp.example/api/spans".to_owned()),
        ]);
        let config = load(&source(BASE), &env).unwrap();
        let endpoint = config.tracing.otlp_endpoint.as_ref().map(|u| u.to_string());
        assert_eq!(endpoint.as_deref(), Some("http://collector:4318/"));
        let traces = config.tracing.otlp_traces_endpoint.as_ref().map(|u| u.to_string());
        assert_eq!(traces.as_deref(), Some("https://otlp.example/api/spans"), "used as it is");
        assert_eq!(config.tracing.service_name.as_deref(), Some("checkout-bff"));
        assert!((config.tracing.sample_ratio - 0.5).abs() < f64::EPSILON, "BFF_ wins over OTEL_");
        let env = Overrides::from_env([("OTEL_TRACES_SAMPLER_ARG".to_owned(), "2".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("tracing.sample_ratio"), "{err}");
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{err}");
    }

    #[test]
    fn export_headers_are_left_out_of_debug() {
        let text = format!("{BASE}[tracing.headers]\nx-api-key = \"s3cret\"\n");
        let config = load(&source(&text), &Overrides::default()).unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("x-api-key") && !debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = load(&source(&format!("{BASE}timeuot = \"1s\"\n")), &Overrides::default()).unwrap_err();
        assert_eq!(err.source, "config/test.toml");
        assert!(err.to_string().contains("timeuot"), "{err}");
    }

    #[test]
    fn an_unknown_key_set_through_the_environment_names_the_variable() {
        let env = Overrides::from_env([("BFF_MEMCACHED__URL".to_owned(), "tcp://127.0.0.1:11211".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("memcached"));
        assert_eq!(err.source, "environment variable BFF_MEMCACHED__URL");
        // A known section set whole through the environment: `redis.url` turns sharing on.
        let env = Overrides::from_env([("BFF_REDIS__URL".to_owned(), "redis://127.0.0.1:6379".to_owned())]);
        let config = load(&source(BASE), &env).unwrap();
        assert_eq!(config.redis.map(|r| r.url.to_string()).as_deref(), Some("redis://127.0.0.1:6379"));
        let env = Overrides::from_env([("BFF_REDIS__URL".to_owned(), "127.0.0.1:6379".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("redis.url"), "{err}");
        let env = Overrides::from_env([("BFF_UPSTREAMS__USERS__TIMEUOT".to_owned(), "1s".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.users.timeuot"));
        assert_eq!(err.source, "environment variable BFF_UPSTREAMS__USERS__TIMEUOT");
        assert!(err.to_string().contains("BFF_UPSTREAMS__USERS__TIMEUOT"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_variable() {
        let env = Overrides::from_env([("BFF_UPSTREAMS__USERS__TIMEOUT".to_owned(), "fast".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.users.timeout"));
        assert_eq!(err.source, "environment variable BFF_UPSTREAMS__USERS__TIMEOUT");
    }

    #[test]
    fn a_bad_list_item_names_the_variable_that_set_the_list() {
        let hosts = ("BFF_SERVER__ALLOWED_HOSTS".to_owned(), r#"["a.example", "b.example:443"]"#.to_owned());
        let err = load(&source(BASE), &Overrides::from_env([hosts])).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.allowed_hosts[1]"));
        assert_eq!(err.source, "environment variable BFF_SERVER__ALLOWED_HOSTS");
        assert!(err.to_string().contains("`b.example:443` is not a host name"), "{err}");
    }

    #[test]
    fn the_upstream_protocol_is_a_default_with_per_upstream_overrides() {
        let env = Overrides::from_env([
            ("BFF_DEFAULTS__PROTOCOL".to_owned(), "http2".to_owned()),
            ("BFF_UPSTREAMS__USERS__PROTOCOL".to_owned(), "auto".to_owned()),
        ]);
        let config = load(&source(BASE), &env).unwrap();
        assert_eq!(config.defaults.protocol, UpstreamProtocol::Http2);
        assert_eq!(config.upstreams["users"].protocol, Some(UpstreamProtocol::Auto));
        let env = Overrides::from_env([("BFF_UPSTREAMS__USERS__PROTOCOL".to_owned(), "h3".to_owned())]);
        let err = load(&source(BASE), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.users.protocol"));
        assert!(err.to_string().contains("http1"), "the error lists what is accepted: {err}");
    }

    #[test]
    fn zero_deadline_and_bad_url_are_refused() {
        let err = load(&source(&BASE.replace("timeout = \"500ms\"", "deadline = \"0s\"")), &Overrides::default())
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("defaults.deadline"));
        let err = load(&source(&BASE.replace("http://127.0.0.1:7001", "ftp://x")), &Overrides::default()).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.users.url"));
    }

    #[test]
    fn an_empty_claim_to_require_is_refused() {
        let auth = format!("{BASE}[auth]\njwks_url = \"http://127.0.0.1:1/jwks\"\n");
        assert!(load(&source(&format!("{auth}issuer = \"i\"\naudience = [\"a\"]\n")), &Overrides::default()).is_ok());
        for (line, key) in [
            ("issuer = \" \"", "auth.issuer"),
            ("audience = [\"a\", \"\"]", "auth.audience[1]"),
            ("typ = \"\"", "auth.typ"),
            ("max_token_bytes = 0", "auth.max_token_bytes"),
            ("algorithms = []", "auth.algorithms"),
        ] {
            let err = load(&source(&format!("{auth}{line}\n")), &Overrides::default()).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{line}: {err}");
        }
    }

    #[test]
    fn existing_only_overrides_skip_absent_sections() {
        let mut overrides = Overrides::default();
        overrides.set_existing("upstreams.users.url", "http://127.0.0.1:1", "start-up");
        overrides.set_existing("upstreams.reviews.url", "http://127.0.0.1:2", "start-up");
        overrides.set_existing("auth.jwks_url", "http://127.0.0.1:3/jwks", "start-up");
        let config = load(&source(BASE), &overrides).unwrap();
        assert_eq!(config.upstreams["users"].url.first().port(), Some(1));
        assert!(!config.upstreams.contains_key("reviews"));
        assert!(config.auth.is_none());
    }

    #[test]
    fn an_upstream_lists_its_instances_and_an_override_of_either_spelling_replaces_them() {
        let text =
            BASE.replace(r#"url = "http://127.0.0.1:7001""#, r#"urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]"#);
        let config = load(&source(&text), &Overrides::default()).unwrap();
        let ports: Vec<_> = config.upstreams["users"].url.iter().map(|u| u.port()).collect();
        assert_eq!(ports, [Some(1), Some(2)]);
        let mut overrides = Overrides::default();
        overrides.set_existing("upstreams.users.url", "http://127.0.0.1:3", "start-up");
        let config = load(&source(&text), &overrides).unwrap();
        assert_eq!(config.upstreams["users"].url.len(), 1);
        overrides.set("upstreams.users.urls", r#"["http://127.0.0.1:4", "http://127.0.0.1:5"]"#, "test");
        assert_eq!(load(&source(BASE), &overrides).unwrap().upstreams["users"].url.len(), 2);
        for bad in [r#"urls = []"#, r#"urls = ["http://127.0.0.1:1", "ftp://x"]"#, "urls = 7"] {
            let text = BASE.replace(r#"url = "http://127.0.0.1:7001""#, bad);
            let err = load(&source(&text), &Overrides::default()).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("upstreams.users.urls"), "{bad}: {err}");
        }
    }

    #[test]
    fn resilience_sections_are_checked_naming_the_key() {
        for (section, key) in [
            ("[defaults.breaker]\nfailure_percent = 0", "defaults.breaker.failure_percent"),
            ("[defaults.breaker]\nhalf_open_probes = 0", "defaults.breaker.half_open_probes"),
            ("[upstreams.users.breaker]\nopen_for = \"0s\"", "upstreams.users.breaker.open_for"),
            ("[defaults.outlier]\nmax_ejection = \"1s\"", "defaults.outlier.max_ejection"),
            ("[upstreams.users.retry]\nattempts = 0", "upstreams.users.retry.attempts"),
        ] {
            let err = load(&source(&format!("{BASE}{section}\n")), &Overrides::default()).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{section}: {err}");
        }
        let on = load(&source(BASE), &Overrides::default()).unwrap();
        assert_eq!(on.defaults.breaker, crate::config::BreakerConfig::default(), "on by default");
        assert!(on.defaults.breaker.enabled);
        let off = load(&source(&format!("{BASE}[defaults.breaker]\nenabled = false\n")), &Overrides::default());
        assert!(!off.unwrap().defaults.breaker.enabled);
    }

    #[test]
    fn a_variable_addresses_a_name_with_dashes_by_its_underscores() {
        let text = format!(
            "{BASE}[rate_limits.per-user]\nkey = \"ip\"\nrate = 100\nper = \"1m\"\n\
             [rate_limits.per_ip]\nkey = \"ip\"\nrate = 5\nper = \"1s\"\n"
        );
        let env = Overrides::from_env([
            ("BFF_RATE_LIMITS__PER_USER__RATE".to_owned(), "7".to_owned()),
            ("BFF_RATE_LIMITS__PER_IP__RATE".to_owned(), "9".to_owned()),
        ]);
        let config = load(&source(&text), &env).unwrap();
        assert_eq!(config.rate_limits.len(), 2, "no new `per_user` limit");
        assert_eq!(config.rate_limits["per-user"].rate.get(), 7);
        assert_eq!(config.rate_limits["per_ip"].rate.get(), 9, "a name with underscores stays as it is");
        // A bad value names the key as the file spells it, and the variable.
        let env = Overrides::from_env([("BFF_RATE_LIMITS__PER_USER__RATE".to_owned(), "many".to_owned())]);
        let err = load(&source(&text), &env).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("rate_limits.per-user.rate"), "{err}");
        assert_eq!(err.source, "environment variable BFF_RATE_LIMITS__PER_USER__RATE");
    }

    #[test]
    fn flag_overrides_win_over_environment() {
        let mut overrides = Overrides::from_env([("BFF_LISTEN".to_owned(), "127.0.0.1:1".to_owned())]);
        overrides.set("listen", "127.0.0.1:2", "--listen");
        assert_eq!(load(&source(BASE), &overrides).unwrap().listen.port(), 2);
    }

    proptest::proptest! {
        #![proptest_config(crate::slow_proptest(128))]

        /// Any value for a duration, a size or a URL key, through a file or a variable: a
        /// configuration or an error naming the key, never a panic.
        #[test]
        fn any_value_of_a_typed_key_loads_or_names_the_key(
            value in "\\PC{0,30}|[0-9]{1,25}(ms|s|m|h|d)?|-[0-9]{1,5}",
            key in proptest::sample::select(vec!["server.idle_timeout", "server.max_body_bytes", "upstreams.users.url", "defaults.deadline"]),
        ) {
            let text = "listen = \"127.0.0.1:0\"\n[upstreams.users]\nurl = \"http://127.0.0.1:1\"\n";
            let mut overrides = Overrides::default();
            overrides.set(key, value.clone(), "test");
            if let Err(error) = load(&ConfigSource { name: "t.toml".into(), text: text.into() }, &overrides) {
                let message = error.to_string();
                let leaf = key.rsplit('.').next().unwrap_or(key);
                proptest::prop_assert!(message.contains(leaf) || message.contains("test"), "{} for {}={:?}", message, key, value);
            }
        }
    }
}
