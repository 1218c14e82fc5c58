//! Typed configuration: `defaults` plus per-upstream and per-route sections, validated at start-up.
//!
//! Sources, later ones winning: the TOML file, then `BFF_*` environment variables (`__` separates
//! keys: `BFF_UPSTREAMS__USERS__URL`), then command-line flags. See [`load`].

mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

pub use load::{ConfigError, ConfigSource, Overrides, load};

/// The whole configuration of one BFF process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Values every upstream and route gets unless its own section says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// Named downstream services.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Per-route overrides, keyed by the route's path pattern (`"/mobile/orders/{id}"`).
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Bearer JWT verification; absent means no route can see an identity.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for machines.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,bff_core=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: default_log_filter(),
        }
    }
}

fn default_log_filter() -> String {
    "info".to_owned()
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Defaults for every upstream and route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The longest one upstream call may take (also bounded by what is left of the deadline).
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// The longest establishing a connection to an upstream may take.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// The budget of a whole request, fan-out included.
    #[serde(with = "humantime_serde", default = "default_deadline")]
    pub deadline: Duration,
    /// The most calls a homogeneous fan-out (`fanout_all`) runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Idle connections kept per upstream host.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            deadline: default_deadline(),
            concurrency: default_concurrency(),
            pool_max_idle_per_host: default_pool_max_idle(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_deadline() -> Duration {
    Duration::from_secs(2)
}
fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN)
}
fn default_pool_max_idle() -> usize {
    256
}

/// One named downstream service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `http://127.0.0.1:7001`.
    pub url: Url,
    /// Overrides `defaults.timeout`.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Overrides `defaults.connect_timeout`.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
}

/// Per-route overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Overrides `defaults.deadline` for this route.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
}

/// Bearer JWT verification against a JWKS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Where the signing keys are published.
    pub jwks_url: Url,
    /// Required `iss` claim, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim (one of), if set.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Accepted signature algorithms; only asymmetric ones are allowed.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde", default = "default_leeway")]
    pub leeway: Duration,
    /// The shortest interval between two JWKS fetches caused by an unknown `kid`.
    #[serde(with = "humantime_serde", default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// The deadline of a route (by its path pattern), or the default one.
    pub fn route_deadline(&self, pattern: &str) -> Duration {
        self.routes
            .get(pattern)
            .and_then(|r| r.deadline)
            .unwrap_or(self.defaults.deadline)
    }

    /// Checks what types alone cannot, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let positive = |key: String, d: Duration| {
            if d.is_zero() {
                Err((key, "must be greater than zero".to_owned()))
            } else {
                Ok(())
            }
        };
        positive("defaults.timeout".into(), self.defaults.timeout)?;
        positive(
            "defaults.connect_timeout".into(),
            self.defaults.connect_timeout,
        )?;
        positive("defaults.deadline".into(), self.defaults.deadline)?;
        for (name, upstream) in &self.upstreams {
            if !matches!(upstream.url.scheme(), "http" | "https") || upstream.url.host().is_none() {
                return Err((
                    format!("upstreams.{name}.url"),
                    format!("`{}` is not an http(s) URL", upstream.url),
                ));
            }
            if let Some(t) = upstream.timeout {
                positive(format!("upstreams.{name}.timeout"), t)?;
            }
            if let Some(t) = upstream.connect_timeout {
                positive(format!("upstreams.{name}.connect_timeout"), t)?;
            }
        }
        for (pattern, route) in &self.routes {
            if !pattern.starts_with('/') {
                return Err((
                    format!("routes.\"{pattern}\""),
                    "a route pattern starts with `/`".to_owned(),
                ));
            }
            if let Some(d) = route.deadline {
                positive(format!("routes.\"{pattern}\".deadline"), d)?;
            }
        }
        if let Some(auth) = &self.auth {
            if auth.algorithms.is_empty() {
                return Err((
                    "auth.algorithms".into(),
                    "name at least one algorithm".into(),
                ));
            }
            for alg in &auth.algorithms {
                if crate::policy::auth::parse_algorithm(alg).is_none() {
                    return Err((
                        "auth.algorithms".into(),
                        format!(
                            "`{alg}` is not accepted (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
