//! `--print-config`: the effective configuration as TOML, every default filled in, secrets
//! redacted.

use toml::{Table, Value};

use super::{Config, ConfigError};

/// What a redacted value reads.
const REDACTED: &str = "<redacted>";

/// `config` as TOML an operator can read (and load again, once the redacted values are put
/// back): API key hashes, export and proxy header values, and URL passwords (`redis.url`) are
/// replaced by `<redacted>`.
pub fn redacted(config: &Config) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError { source: "--print-config".to_owned(), key: None, message };
    let mut table = Table::try_from(config).map_err(|e| fail(e.to_string()))?;
    redact_table(&mut table, false);
    toml::to_string_pretty(&table).map_err(|e| fail(e.to_string()))
}

/// Whether a key names a secret wherever it sits: `key_sha256`, `password`, `client_secret`, a
/// `token` (not `token_cache_bytes`, which only sizes something).
fn is_secret_key(key: &str) -> bool {
    ["sha256", "hash", "secret", "password", "token"]
        .iter()
        .any(|word| key.strip_suffix(word).is_some_and(|rest| rest.is_empty() || rest.ends_with('_')))
}

/// Whether the string values of the table under `key` are header values (an export's
/// `tracing.headers`, a proxy route's `request_headers.set`): they carry credentials.
fn holds_header_values(key: &str) -> bool {
    key == "headers" || key == "set"
}

fn redact_table(table: &mut Table, header_values: bool) {
    for (key, value) in table.iter_mut() {
        if is_secret_key(key) {
            *value = Value::String(REDACTED.to_owned());
            continue;
        }
        redact_value(value, header_values || holds_header_values(key), header_values);
    }
}

/// `inside` is for the value's own table; `is_header_value` for the value itself.
fn redact_value(value: &mut Value, inside: bool, is_header_value: bool) {
    match value {
        Value::String(_) if is_header_value => *value = Value::String(REDACTED.to_owned()),
        Value::String(text) => {
            if let Some(hidden) = without_password(text) {
                *text = hidden;
            }
        }
        Value::Table(table) => redact_table(table, inside),
        Value::Array(items) => items.iter_mut().for_each(|item| redact_value(item, inside, false)),
        _ => {}
    }
}

/// A URL with its password replaced, when `text` is one that has a password.
fn without_password(text: &str) -> Option<String> {
    let mut url = url::Url::parse(text).ok()?;
    url.password()?;
    url.set_password(Some(REDACTED)).ok()?;
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Overrides, load};

    const TEXT: &str = r#"
listen = "127.0.0.1:8082"
[upstreams.orders]
url = "http://127.0.0.1:7002"
[api_keys.clients.acme]
tier = "pro"
key_sha256 = "9f8cfdb17116bf0e2a44e071454f25594cb9b8737bf331e6a2f0b30550572f29"
account = "acme"
[rate_limits.per-client]
key = "client"
rate = 10
per = "1s"
[redis]
url = "redis://bff:hunter2@127.0.0.1:6379/0"
[tracing]
otlp_endpoint = "http://127.0.0.1:4318"
[tracing.headers]
authorization = "Bearer collector-secret"
[[proxy]]
path = "/files/{*rest}"
upstream = "orders"
access = "public"
request_headers = { set = { "x-upstream-key" = "upstream-secret" }, remove = ["cookie"] }
"#;

    #[test]
    fn secrets_are_redacted_and_the_rest_reads_back_as_the_same_configuration() {
        let source = ConfigSource { name: "partner.toml".into(), text: TEXT.into() };
        let config = load(&source, &Overrides::default()).unwrap();
        let printed = redacted(&config).unwrap();
        for secret in ["9f8cfdb1", "hunter2", "collector-secret", "upstream-secret"] {
            assert!(!printed.contains(secret), "{secret} in\n{printed}");
        }
        assert!(printed.contains("redis://bff:%3Credacted%3E@127.0.0.1:6379/0"), "{printed}");
        // Defaults are filled in; names and non-secret values stay.
        for shown in ["header_read_timeout = \"10s\"", "[rate_limits.per-client]", "acme", "\"cookie\""] {
            assert!(printed.contains(shown), "{shown} missing from\n{printed}");
        }
        // What is printed loads again as the same configuration, once the hash is put back.
        let back = printed.replace(
            "key_sha256 = \"<redacted>\"",
            "key_sha256 = \"9f8cfdb17116bf0e2a44e071454f25594cb9b8737bf331e6a2f0b30550572f29\"",
        );
        let again = load(&ConfigSource { name: "printed".into(), text: back }, &Overrides::default()).unwrap();
        assert_eq!(redacted(&again).unwrap(), printed);
    }

    #[test]
    fn a_key_that_only_mentions_a_secret_word_is_shown() {
        let text = "listen = \"127.0.0.1:8081\"\n[auth]\njwks_url = \"http://127.0.0.1:7000/jwks.json\"\n\
                    token_cache_bytes = 4096\n";
        let config = load(&ConfigSource { name: "mobile.toml".into(), text: text.into() }, &Overrides::default());
        let printed = redacted(&config.unwrap()).unwrap();
        for shown in ["token_cache_bytes = 4096", "max_token_bytes = 8192", "token_cache_ttl = "] {
            assert!(printed.contains(shown), "{shown} missing from\n{printed}");
        }
        assert!(!printed.contains(REDACTED), "{printed}");
    }
}
