//! Rate limits and quotas, enforced before a request reaches its handler.
//!
//! - **Rate limits** (`[rate_limits.<name>]`): GCRA with a burst, counted per key (client IP,
//!   user, API client, partner account, a JWT claim, or everyone together) on the routes they
//!   list. Several may apply to one request.
//! - **Quotas** (`[quotas.<tier>]`): requests per fixed window for each API client, by its tier.
//! - **Concurrency limits** (`[concurrency_limits.<name>]`): requests of one key in flight at
//!   once, in this process ([`in_flight`]).
//!
//! Counting is in this process ([`local`], governor), or in Redis when `redis.url` is set
//! ([`shared`]), so that replicas share one count. [`layer`] checks a request's limits and
//! answers the `RateLimit-Policy` and `RateLimit` headers, or `429`.

mod batch;
pub(crate) mod client_ip;
mod in_flight;
pub(crate) mod layer;
mod lease;
mod local;
mod shared;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::{Counter, Gauge};
use sha2::{Digest, Sha256};

use self::in_flight::{ConcurrencyRule, InFlight};
pub(crate) use self::in_flight::{Held, HeldBody, TunnelPlaces};
use self::local::Local;
use self::shared::Shared;
use crate::config::{Config, IpNet, LimitKeyKind, OnRedisError, QuotaConfig};
use crate::observe::metrics::Metrics;

/// How often idle buckets are forgotten.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// The longest key written to Redis as it is; a longer one is written as its SHA-256.
const MAX_PLAIN_KEY: usize = 128;

/// The configured limits and quotas, and where they are counted. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Limits(Arc<Inner>);

struct Inner {
    rules: Vec<Rule>,
    concurrency: Vec<ConcurrencyRule>,
    in_flight: InFlight,
    quotas: HashMap<String, QuotaConfig>,
    local: Local,
    shared: Option<Shared>,
    trusted: Arc<[IpNet]>,
    keys: Gauge,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rates = self.0.rules.iter().map(|r| &*r.name);
        let names: Vec<&str> = rates.chain(self.0.concurrency.iter().map(|r| &*r.name)).collect();
        f.debug_struct("Limits").field("rules", &names).field("shared", &self.0.shared).finish_non_exhaustive()
    }
}

/// One rate limit.
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) key: LimitKeyKind,
    pub(crate) rate: NonZeroU32,
    pub(crate) per: Duration,
    pub(crate) interval: Duration,
    pub(crate) burst: NonZeroU32,
    pub(crate) routes: Option<Vec<String>>,
}

impl Rule {
    /// The interval in whole microseconds (at least one), as Redis counts.
    pub(crate) fn interval_micros(&self) -> u64 {
        u64::try_from(self.interval.as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether it covers the route `pattern`.
    pub(crate) fn covers(&self, pattern: &str) -> bool {
        self.routes.as_ref().is_none_or(|routes| routes.iter().any(|r| r == pattern))
    }
}

/// What one request is counted against: a rate limit (by index) for a key, or a client's quota.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Rule { index: usize, key: LimitKey },
    Quota { client: Arc<str>, tier: Arc<str>, requests: u64, per: Duration },
}

/// Whose count a request goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LimitKey {
    Ip(IpAddr),
    Name(Arc<str>),
    Global,
}

impl LimitKey {
    /// Appends the key's part of a Redis key to `out`: short and printable as it is, otherwise
    /// hashed.
    fn write_redis_part(&self, out: &mut String) {
        match self {
            Self::Ip(ip) => {
                let _ = write!(out, "{ip}");
            }
            Self::Global => out.push('*'),
            Self::Name(name) if name.len() <= MAX_PLAIN_KEY && name.bytes().all(|b| b.is_ascii_graphic()) => {
                out.push('=');
                out.push_str(name);
            }
            Self::Name(name) => {
                out.push('#');
                for byte in Sha256::digest(name.as_bytes()) {
                    let _ = write!(out, "{byte:02x}");
                }
            }
        }
    }

    #[cfg(test)]
    fn redis_part(&self) -> String {
        let mut part = String::new();
        self.write_redis_part(&mut part);
        part
    }
}

/// A count after a request: what is left, when it is whole again, and, when the request is
/// refused, how long until one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
    pub(crate) retry_after: Option<Duration>,
}

impl Status {
    fn unlimited() -> Self {
        Self { remaining: u64::MAX, reset: Duration::ZERO, retry_after: None }
    }
}

/// Redis cannot count and `redis.on_error` is `deny`.
#[derive(Debug)]
pub(crate) struct Unavailable;

impl Limits {
    /// The limits and quotas of `config`, connected to its Redis when it has rate limits or
    /// quotas to share; `None` when it has none.
    pub(crate) async fn new(config: &Config, metrics: &Metrics) -> Result<Option<Self>, String> {
        let counted = !(config.rate_limits.is_empty() && config.quotas.is_empty());
        if !counted && config.concurrency_limits.is_empty() {
            return Ok(None);
        }
        let rules: Vec<Rule> = config
            .rate_limits
            .iter()
            .map(|(name, limit)| Rule {
                name: Arc::from(name.as_str()),
                key: limit.key.clone(),
                rate: limit.rate,
                per: limit.per,
                interval: limit.interval(),
                burst: limit.burst(),
                routes: limit.routes.clone(),
            })
            .collect();
        let clients: Vec<Arc<str>> = match (&config.api_keys, config.quotas.is_empty()) {
            (Some(keys), false) => keys.clients.keys().map(|name| Arc::from(name.as_str())).collect(),
            _ => Vec::new(),
        };
        let local = Local::new(rules.iter().map(|r| (r.interval, r.burst)), &clients);
        let shared = match &config.redis {
            Some(redis) if counted => Some(Shared::connect(redis, metrics).await?),
            _ => None,
        };
        let concurrency: Vec<ConcurrencyRule> = (config.concurrency_limits.iter())
            .map(|(name, limit)| ConcurrencyRule {
                name: Arc::from(name.as_str()),
                key: limit.key.clone(),
                max: limit.max_in_flight,
                routes: limit.routes.clone(),
            })
            .collect();
        let gauges = (concurrency.iter())
            .map(|rule| metrics.gauge("bff_concurrency_in_flight", &[("limit", rule.name.to_string())]))
            .collect();
        let inner = Inner {
            rules,
            concurrency,
            in_flight: InFlight::new(gauges),
            quotas: config.quotas.clone().into_iter().collect(),
            local,
            shared,
            trusted: config.server.trusted_proxies.clone().into(),
            keys: metrics.gauge("bff_rate_limit_keys", &[]),
        };
        let limits = Self(Arc::new(inner));
        limits.spawn_housekeeping();
        Ok(Some(limits))
    }

    /// Checks and counts `checks` (rate limits first, then quotas): in Redis when it is
    /// configured and answers, otherwise here, unless `redis.on_error` says to refuse.
    pub(crate) async fn check(&self, checks: &[Check]) -> Result<Vec<Status>, Unavailable> {
        if let Some(shared) = &self.0.shared {
            if let Some(statuses) = shared.check(checks, &self.0.rules).await {
                return Ok(statuses);
            }
            if shared.on_error == OnRedisError::Deny {
                return Err(Unavailable);
            }
        }
        Ok(self.0.local.check(checks))
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.0.rules
    }

    pub(crate) fn concurrency(&self) -> &[ConcurrencyRule] {
        &self.0.concurrency
    }

    /// Takes a place under each concurrency limit of `wanted` (its index, the key, its
    /// `max_in_flight`), all or none: `Err` with the index of the first that is full.
    pub(crate) fn hold(&self, wanted: Vec<(usize, LimitKey, NonZeroU32)>) -> Result<Held, usize> {
        self.0.in_flight.hold(wanted)
    }

    pub(crate) fn quota(&self, tier: &str) -> Option<&QuotaConfig> {
        self.0.quotas.get(tier)
    }

    /// The tiers with a quota.
    pub(crate) fn tiers(&self) -> impl Iterator<Item = &str> {
        self.0.quotas.keys().map(String::as_str)
    }

    pub(crate) fn has_quotas(&self) -> bool {
        !self.0.quotas.is_empty()
    }

    pub(crate) fn trusted_proxies(&self) -> &[IpNet] {
        &self.0.trusted
    }

    /// The Unix time now, on tokio's clock.
    pub(crate) fn unix_now(&self) -> Duration {
        self.0.local.unix_now()
    }

    /// Forgets idle buckets every [`HOUSEKEEPING`], until the limits are dropped.
    fn spawn_housekeeping(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.local.forget_idle();
                if let Some(shared) = &inner.shared {
                    shared.forget_leases();
                }
                inner.keys.set((inner.local.keys() + inner.in_flight.keys()) as f64);
            }
        });
    }
}

/// Counters of one outcome pair, made once.
#[derive(Debug, Clone)]
pub(crate) struct Outcomes {
    pub(crate) allowed: Counter,
    pub(crate) limited: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_odd_keys_reach_redis_hashed() {
        assert_eq!(LimitKey::Ip("203.0.113.7".parse().unwrap()).redis_part(), "203.0.113.7");
        assert_eq!(LimitKey::Name(Arc::from("user-42")).redis_part(), "=user-42");
        let odd = LimitKey::Name(Arc::from("a b")).redis_part();
        assert!(odd.starts_with('#') && odd.len() == 65, "{odd}");
        assert_eq!(LimitKey::Name(Arc::from("x".repeat(500))).redis_part().len(), 65);
    }
}

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod shared_tests;
