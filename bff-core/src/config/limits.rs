//! Rate limits, quotas, and the Redis that shares their counts between replicas.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// One rate limit (`[rate_limits.<name>]`): GCRA, `rate` requests `per` period with bursts of
/// up to `burst`, counted per key, on `routes` (all of them when absent).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// What the count is kept per: `ip`, `user`, `client`, `account`, `claim:<name>` or `global`.
    pub key: LimitKeyKind,
    /// Requests per `per`, sustained.
    pub rate: NonZeroU32,
    /// The period of `rate`.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// The most requests at once after a quiet spell; absent: `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
    /// The route patterns the limit covers, counted together; absent: every route its key
    /// applies to (`ip` and `global`: all; the others: the authenticated ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

impl RateLimitConfig {
    /// The burst, `rate` unless set.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst.unwrap_or(self.rate)
    }

    /// The time one request's share takes to come back: `per / rate`.
    pub fn interval(&self) -> Duration {
        self.per / self.rate.get()
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        if self.interval() < Duration::from_micros(1) {
            return Err((format!("{key}.per"), "allows more than one request a microsecond: raise `per`".into()));
        }
        if self.routes.as_ref().is_some_and(Vec::is_empty) {
            return Err((format!("{key}.routes"), "lists no route: list some, or leave it out for all".into()));
        }
        Ok(())
    }
}

/// One concurrency limit (`[concurrency_limits.<name>]`): at most `max_in_flight` requests of one
/// key in flight at once on `routes` (all of them when absent), from the request's arrival to the
/// last byte of its response. Counted in each process: with Redis too, every replica allows
/// `max_in_flight` of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConcurrencyLimitConfig {
    /// What the count is kept per: `ip`, `user`, `client`, `account`, `claim:<name>` or `global`.
    pub key: LimitKeyKind,
    /// The most requests of one key in flight at once; one more is `429 CONCURRENCY_LIMITED`.
    pub max_in_flight: NonZeroU32,
    /// The route patterns the limit covers, counted together; absent: every route its key
    /// applies to (`ip` and `global`: all; the others: the authenticated ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

impl ConcurrencyLimitConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        if self.routes.as_ref().is_some_and(Vec::is_empty) {
            return Err((format!("{key}.routes"), "lists no route: list some, or leave it out for all".into()));
        }
        Ok(())
    }
}

/// What a rate limit counts per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKeyKind {
    /// The client's IP address (`X-Forwarded-For` only from `server.trusted_proxies`); IPv6
    /// addresses by their /64 network, which one client usually holds whole.
    Ip,
    /// The JWT's `sub`.
    User,
    /// The API client (its configured name).
    Client,
    /// The API client's partner account.
    Account,
    /// A claim of the JWT (`claim:tenant`); requests whose token lacks it are not counted.
    Claim(String),
    /// One count for every caller together.
    Global,
}

impl LimitKeyKind {
    /// Whether the key is known before the caller is authenticated.
    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(self, Self::Ip | Self::Global)
    }
}

impl FromStr for LimitKeyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ip" => Self::Ip,
            "user" => Self::User,
            "client" => Self::Client,
            "account" => Self::Account,
            "global" => Self::Global,
            _ => match s.strip_prefix("claim:") {
                Some(claim) if !claim.is_empty() => Self::Claim(claim.to_owned()),
                _ => {
                    return Err(format!("`{s}` is not a limit key: ip, user, client, account, claim:<name> or global"));
                }
            },
        })
    }
}

impl fmt::Display for LimitKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip => f.write_str("ip"),
            Self::User => f.write_str("user"),
            Self::Client => f.write_str("client"),
            Self::Account => f.write_str("account"),
            Self::Claim(claim) => write!(f, "claim:{claim}"),
            Self::Global => f.write_str("global"),
        }
    }
}

via_str!(LimitKeyKind);

/// The quota of one API-client tier (`[quotas.<tier>]`): `requests` per `per`, in fixed windows
/// aligned on the Unix epoch (a `1d` quota resets at 00:00 UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Requests per window.
    pub requests: NonZeroU64,
    /// The window: whole seconds, at least one.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl QuotaConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), (String, String)> {
        if self.per.as_secs() == 0 || self.per.subsec_nanos() != 0 {
            return Err((format!("{key}.per"), "must be a whole number of seconds (`1d`, `1h`)".into()));
        }
        Ok(())
    }
}

/// Shared counting in Redis: every replica pointing at the same Redis shares its limits and
/// quotas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS; the builder
    /// connects at start-up.
    pub url: RedisUrl,
    /// PEM CA certificates trusted for `rediss://`, instead of the platform's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The longest a request waits on Redis; past it, `on_error` applies.
    #[serde(with = "humantime_serde", default = "default_redis_timeout")]
    pub timeout: Duration,
    /// What happens while Redis cannot answer: `local` counts in this process alone (each
    /// replica allows the whole limit), `deny` refuses limited requests with a 503.
    #[serde(default)]
    pub on_error: OnRedisError,
    /// The prefix of every key written (`<prefix>:rl:<limit>:<key>`, `<prefix>:quota:<client>`).
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// How long a replica may hold a lease of a busy key's rate limits: a share of its budget
    /// that Redis counts once and the replica spends alone, for that long at most. `0s` (the
    /// default): every request is counted in Redis, exactly. A lease lets the requests admitted
    /// in any stretch of time exceed exact counting's by at most `lease ÷ interval`, and units
    /// left when it ends are lost. Quotas are never leased.
    #[serde(with = "humantime_serde", default)]
    pub lease: Duration,
}

/// The longest `redis.lease`.
const MAX_LEASE: Duration = Duration::from_secs(1);

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_redis_prefix() -> String {
    "bff".to_owned()
}

impl RedisConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.timeout.is_zero() {
            return Err(("redis.timeout".into(), "must be greater than zero".into()));
        }
        if self.tls_ca.is_some() && !self.url.expose().starts_with("rediss://") {
            return Err(("redis.tls_ca".into(), "is for TLS: the URL must be rediss://".into()));
        }
        if self.prefix.is_empty() || !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(("redis.prefix".into(), "must be printable ASCII without spaces".into()));
        }
        if self.lease > MAX_LEASE {
            return Err((
                "redis.lease".into(),
                "must be at most 1s: a leased request may be admitted that long after Redis counted it".into(),
            ));
        }
        Ok(())
    }
}

/// What a limited request gets while Redis cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnRedisError {
    /// Fail open, counting in this process alone.
    #[default]
    Local,
    /// Fail closed: `503 RATE_LIMIT_UNAVAILABLE`.
    Deny,
}

/// A Redis URL, checked as it is read; its password is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a Redis URL ({e}): expected redis://host:port"))?;
        if !matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(format!("`{}` is not a Redis scheme: expected redis://host:port", url.scheme()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                f.write_str(url.as_str())
            }
            _ => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

via_str!(RedisUrl);

/// A rate limit's name: it is a header token, a metric label and part of a Redis key.
pub(crate) fn check_limit_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err("a limit's name is 1 to 64 letters, digits, `-` or `_`".into());
    }
    if name == QUOTA_POLICY {
        return Err(format!("`{QUOTA_POLICY}` names the quota in the RateLimit headers: pick another name"));
    }
    Ok(())
}

/// The name the quota goes by in the `RateLimit` headers.
pub(crate) const QUOTA_POLICY: &str = "quota";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_urls_are_checked_as_they_are_read() {
        assert_eq!("claim:tenant".parse::<LimitKeyKind>(), Ok(LimitKeyKind::Claim("tenant".into())));
        assert!("claim:".parse::<LimitKeyKind>().is_err() && "users".parse::<LimitKeyKind>().is_err());
        let url: RedisUrl = "redis://user:s3cret@127.0.0.1:6379/2".parse().unwrap();
        assert_eq!(url.to_string(), "redis://user:***@127.0.0.1:6379/2");
        assert_eq!(url.expose(), "redis://user:s3cret@127.0.0.1:6379/2");
        assert!("http://127.0.0.1:6379".parse::<RedisUrl>().is_err());
        assert!("127.0.0.1:6379".parse::<RedisUrl>().is_err());
        assert!(check_limit_name("per-user_1").is_ok());
        for bad in ["", "a b", "quota", "é"] {
            assert!(check_limit_name(bad).is_err(), "{bad}");
        }
    }
}
