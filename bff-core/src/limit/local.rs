//! Counting in this process: governor's GCRA per rate limit, fixed windows per quota. Time is
//! tokio's clock, so tests pause and advance it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Check, LimitKey, Status};

/// governor's clock over tokio's: nanoseconds since the limiter was made.
#[derive(Debug, Clone)]
pub(crate) struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub(crate) fn new() -> Self {
        Self { start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

type Keyed = RateLimiter<LimitKey, DefaultKeyedStateStore<LimitKey>, TokioClock, StateInformationMiddleware>;

/// One rate limit's buckets.
struct Gcra {
    limiter: Keyed,
    interval: Duration,
    burst: u32,
}

/// A quota's count in its current window.
#[derive(Debug, Default)]
struct Window {
    index: u64,
    used: u64,
}

/// Every limit and quota, counted here.
pub(crate) struct Local {
    clock: TokioClock,
    /// The Unix time when `clock` started.
    unix_start: Duration,
    gcra: Vec<Gcra>,
    /// By API client name; the clients are the configured ones, so the table never grows.
    windows: HashMap<Arc<str>, Mutex<Window>>,
}

impl Local {
    /// `rules`: each limit's interval and burst, by index; `clients`: the API clients with a quota.
    pub(crate) fn new(rules: impl IntoIterator<Item = (Duration, NonZeroU32)>, clients: &[Arc<str>]) -> Self {
        let clock = TokioClock::new();
        let gcra = rules
            .into_iter()
            .map(|(interval, burst)| {
                let quota =
                    Quota::with_period(interval).unwrap_or(Quota::per_second(NonZeroU32::MAX)).allow_burst(burst);
                let limiter: Keyed = RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone());
                Gcra { limiter, interval, burst: burst.get() }
            })
            .collect();
        let windows = clients.iter().map(|c| (c.clone(), Mutex::new(Window::default()))).collect();
        let unix_start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self { clock, unix_start, gcra, windows }
    }

    /// The Unix time now, on tokio's clock.
    pub(crate) fn unix_now(&self) -> Duration {
        self.unix_start + self.clock.start.elapsed()
    }

    /// Checks `checks` in order, counting each; stops at the first refusal (which is last).
    pub(crate) fn check(&self, checks: &[Check]) -> Vec<Status> {
        let mut statuses = Vec::with_capacity(checks.len());
        for check in checks {
            let status = match check {
                Check::Rule { index, key } => self.gcra(*index, key),
                Check::Quota { client, requests, per, .. } => self.quota(client, *requests, *per),
            };
            let refused = status.retry_after.is_some();
            statuses.push(status);
            if refused {
                break;
            }
        }
        statuses
    }

    fn gcra(&self, index: usize, key: &LimitKey) -> Status {
        let Some(gcra) = self.gcra.get(index) else { return Status::unlimited() };
        match gcra.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // Full again once every used share has come back.
                let reset = gcra.interval * gcra.burst.saturating_sub(remaining);
                Status { remaining: u64::from(remaining), reset, retry_after: None }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Status { remaining: 0, reset: gcra.interval * gcra.burst, retry_after: Some(wait) }
            }
        }
    }

    fn quota(&self, client: &str, requests: u64, per: Duration) -> Status {
        let Some(window) = self.windows.get(client) else { return Status::unlimited() };
        let now = self.unix_now();
        let per_secs = per.as_secs().max(1);
        let index = now.as_secs() / per_secs;
        let reset = Duration::from_secs((index + 1) * per_secs).saturating_sub(now);
        let mut window = window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.index != index {
            *window = Window { index, used: 0 };
        }
        if window.used >= requests {
            return Status { remaining: 0, reset, retry_after: Some(reset) };
        }
        window.used += 1;
        Status { remaining: requests - window.used, reset, retry_after: None }
    }

    /// Forgets the buckets that are full again (they count as new), so keys do not pile up.
    pub(crate) fn forget_idle(&self) {
        for gcra in &self.gcra {
            gcra.limiter.retain_recent();
            gcra.limiter.shrink_to_fit();
        }
    }

    /// How many keys the limits hold, in all.
    pub(crate) fn keys(&self) -> usize {
        self.gcra.iter().map(|g| g.limiter.len()).sum()
    }
}
