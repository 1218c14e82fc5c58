//! Counting in Redis, shared by every replica: one script call per request checks and counts all
//! its limits at once (`check.lua`), under `redis.timeout`. While Redis cannot answer, limited
//! requests are counted in this process (`on_error = "local"`) or refused (`"deny"`); Redis is
//! tried again after [`RETRY_AFTER`], and every change is logged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};
use redis::aio::ConnectionManager;

use super::{Check, Rule, Status};
use crate::config::{OnRedisError, RedisConfig};
use crate::observe::metrics::Metrics;
use crate::redis_connection::CONNECT_TIMEOUT;

/// How long Redis is left alone after it failed, before a request tries it again; meanwhile
/// requests go straight to `on_error` instead of each waiting out the timeout.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(250);

/// A Redis that limits are counted in.
pub(crate) struct Shared {
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    pub(crate) on_error: OnRedisError,
    prefix: String,
    url: String,
    /// When Redis may be tried again, in milliseconds on `clock`; 0: it is up.
    down_until: AtomicU64,
    clock: tokio::time::Instant,
    up: AtomicBool,
    calls: Histogram,
    timeouts: Counter,
    errors: Counter,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Shared {
    /// Connects to `config.url`, failing with a message for people when it cannot.
    pub(crate) async fn connect(config: &RedisConfig, metrics: &Metrics) -> Result<Self, String> {
        let url = config.url.to_string();
        let connection = crate::redis_connection::connect(config).await?;
        let script = redis::Script::new(include_str!("check.lua"));
        // Loaded once now, so requests send its hash alone.
        let mut loading = connection.clone();
        if let Err(e) = tokio::time::timeout(CONNECT_TIMEOUT, script.prepare_invoke().load_async(&mut loading))
            .await
            .map_err(|_| "no answer".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            return Err(format!("{url} cannot load the limits' script: {e}"));
        }
        Ok(Self {
            connection,
            script,
            timeout: config.timeout,
            on_error: config.on_error,
            prefix: config.prefix.clone(),
            url,
            down_until: AtomicU64::new(0),
            clock: tokio::time::Instant::now(),
            up: AtomicBool::new(true),
            calls: metrics.histogram("bff_redis_call_seconds", &[]),
            timeouts: metrics.counter("bff_redis_errors_total", &[("kind", "timeout".to_owned())]),
            errors: metrics.counter("bff_redis_errors_total", &[("kind", "error".to_owned())]),
        })
    }

    /// Checks and counts `checks` in one call; `None` when Redis did not answer in time (or is
    /// known to be down), which has been logged and counted.
    pub(crate) async fn check(&self, checks: &[Check], rules: &[Rule]) -> Option<Vec<Status>> {
        let down_until = self.down_until.load(Ordering::Relaxed);
        if down_until != 0 && self.millis() < down_until {
            return None;
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(checks.iter().filter(|c| matches!(c, Check::Rule { .. })).count());
        for check in checks {
            if let Check::Rule { index, key } = check
                && let Some(rule) = rules.get(*index)
            {
                invocation.key(format!("{}:rl:{}:{}", self.prefix, rule.name, key.redis_part()));
                invocation.arg(rule.interval_micros()).arg(rule.burst.get());
            }
        }
        for check in checks {
            if let Check::Quota { client, requests, per, .. } = check {
                invocation.key(format!("{}:quota:{client}", self.prefix));
                invocation.arg(*requests).arg(per.as_secs());
            }
        }
        let mut connection = self.connection.clone();
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<i64>>(&mut connection)).await;
        self.calls.record(started.elapsed());
        let values = match answer {
            Ok(Ok(values)) if values.len() == checks.len() * 4 => values,
            Ok(Ok(values)) => {
                self.errors.increment(1);
                return self.failed(&format!(
                    "the script answered {} values for {} checks",
                    values.len(),
                    checks.len()
                ));
            }
            // The connection's own response timeout (the same `redis.timeout`) usually fires first.
            Ok(Err(e)) if e.is_timeout() => {
                self.timeouts.increment(1);
                return self.failed(&format!("no answer within {:?}", self.timeout));
            }
            Ok(Err(e)) => {
                self.errors.increment(1);
                return self.failed(&e.to_string());
            }
            Err(_) => {
                self.timeouts.increment(1);
                return self.failed(&format!("no answer within {:?}", self.timeout));
            }
        };
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.url, "redis answers again: limits are shared again");
        }
        self.down_until.store(0, Ordering::Relaxed);
        // In the order of `checks`: its rate limits come before its quotas, as the keys went.
        let micros = |x: i64| Duration::from_micros(u64::try_from(x).unwrap_or(0));
        let statuses = values
            .chunks_exact(4)
            .map(|v| Status {
                remaining: u64::try_from(v[1]).unwrap_or(0),
                reset: micros(v[3]),
                retry_after: (v[0] == 0).then(|| micros(v[2])),
            })
            .collect();
        Some(statuses)
    }

    fn failed(&self, error: &str) -> Option<Vec<Status>> {
        self.down_until.store(self.millis() + RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            let then = match self.on_error {
                OnRedisError::Local => "counting limits in this process alone (redis.on_error = \"local\")",
                OnRedisError::Deny => "refusing limited requests with 503 (redis.on_error = \"deny\")",
            };
            tracing::warn!(url = %self.url, error, "redis does not answer: {then}");
        }
        None
    }

    fn millis(&self) -> u64 {
        // Never 0, which means "up".
        self.clock.elapsed().as_millis() as u64 + 1
    }
}
