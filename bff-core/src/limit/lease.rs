//! Leases (`redis.lease`): a share of a key's budget that Redis counts once and this process then
//! spends alone, so a busy user costs Redis one script run per lease, not one per request.
//!
//! - A request whose checks are all rate limits takes a unit of the lease held for its keys, while
//!   one is left and the lease is younger than `redis.lease`. Its counts are those Redis answered
//!   for that unit's place when it granted the lease. Quotas are never leased.
//! - Otherwise the request goes to Redis asking for itself and a new lease: as many units as its
//!   keys were asked for over the last `redis.lease`, judging by the checks since the last ask,
//!   and at most a quarter of the smallest burst. Redis grants what fits, judged as that many
//!   requests queued one after another. While one request asks, the others of the same keys go
//!   alone, as without leases. A key seen once in a while asks for one unit: no lease.
//!
//! **What is traded.** Redis counts a unit when it grants it, and this process spends it at most
//! `redis.lease` after the ask. So across every replica, the requests admitted in any stretch of
//! time are at most what exact counting admits in that stretch widened by `redis.lease`: at most
//! `lease ÷ interval` more (for 100 a minute and a 100 ms lease, not one more), and never more
//! over time. Units left when a lease ends are lost (`bff_redis_lease_units_total{result="lost"}`):
//! a replica under-admits by at most a lease's units, when a key's demand falls. A leased
//! request's `RateLimit` headers say what Redis answered at the grant.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use metrics::Counter;
use tokio::time::Instant;

use super::Status;
use super::batch::{self, Group, Key};

/// The most keys with a lease (or a recent ask) held at once; past it, new keys go to Redis
/// request by request until the housekeeping (every 10 s) forgets ended leases.
const MAX_KEYS: usize = 4096;

/// The most units one lease asks for, whatever the burst.
const MAX_UNITS: u64 = 1 << 16;

/// The leases of one process, by the keys a request counts on.
pub(super) struct Leases {
    length: Duration,
    table: Mutex<HashMap<Vec<Key>, Lease>>,
    granted: Counter,
    lost: Counter,
}

struct Lease {
    /// Units left to spend, while `ends` is ahead.
    left: u64,
    ends: Instant,
    /// What Redis answered for the grant's group, and the place of the next unit in it.
    answer: Vec<i64>,
    next: u64,
    /// When the last ask was made, and the checks of these keys since.
    asked: Instant,
    seen: u64,
    /// While a request asks for a new lease; past it the ask is taken as lost.
    asking_until: Option<Instant>,
}

/// What a request does with its keys' lease.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// It spent a unit: these are its counts.
    Spent(Vec<Status>),
    /// It goes to Redis for `units` (itself, then a lease of the rest). An `asker` reports what
    /// came back with [`Leases::answered`].
    Ask { units: u64, asker: bool },
}

impl Leases {
    pub(super) fn new(length: Duration, granted: Counter, lost: Counter) -> Self {
        Self { length, table: Mutex::default(), granted, lost }
    }

    /// Spends a unit of `keys`' lease (the first `limits` of them rate limits; quotas are never
    /// leased), or says what to ask Redis for. `wait` is how long the ask may take.
    pub(super) fn take(&self, keys: &[Key], limits: usize, now: Instant, wait: Duration) -> Take {
        if limits == 0 || limits != keys.len() {
            return Take::Ask { units: 1, asker: false };
        }
        let mut table = self.table();
        if let Some(lease) = table.get_mut(keys) {
            lease.seen += 1;
            if lease.left > 0 && now < lease.ends {
                lease.left -= 1;
                lease.next += 1;
                let group = Group { keys, limits, requests: 0 };
                return Take::Spent(batch::statuses(&group, &lease.answer, lease.next - 1));
            }
            if lease.asking_until.is_some_and(|until| now < until) {
                return Take::Ask { units: 1, asker: false };
            }
            // The checks since the last ask, over the time since, scaled to one lease's length.
            let since = now.duration_since(lease.asked).as_nanos();
            let demand = (u128::from(lease.seen) * self.length.as_nanos()).checked_div(since).unwrap_or(u128::MAX);
            let units = u64::try_from(demand).unwrap_or(u64::MAX).clamp(1, most_units(keys));
            self.lost.increment(std::mem::take(&mut lease.left));
            (lease.asked, lease.seen, lease.asking_until) = (now, 0, Some(now + wait));
            return Take::Ask { units, asker: true };
        }
        if table.len() >= MAX_KEYS {
            // Not scanned here, where many new keys would make each request pay for a scan.
            return Take::Ask { units: 1, asker: false };
        }
        let lease = Lease {
            left: 0,
            ends: now,
            answer: Vec::new(),
            next: 0,
            asked: now,
            seen: 0,
            asking_until: Some(now + wait),
        };
        table.insert(keys.to_vec(), lease);
        Take::Ask { units: 1, asker: true }
    }

    /// What Redis answered an asker of `keys`: its group's answer, the place of its own unit and
    /// the units granted, itself included; `None` when Redis did not answer.
    pub(super) fn answered(&self, keys: &[Key], grant: Option<(Vec<i64>, u64, u64)>) {
        let mut table = self.table();
        let Some(lease) = table.get_mut(keys) else { return };
        lease.asking_until = None;
        let Some((answer, place, units)) = grant else { return };
        let left = units.saturating_sub(1);
        self.granted.increment(left);
        // Counted from the ask, which came before Redis counted the units.
        (lease.left, lease.ends, lease.answer, lease.next) = (left, lease.asked + self.length, answer, place + 1);
    }

    /// Forgets the leases that have ended, counting their units left as lost.
    pub(super) fn forget(&self, now: Instant) {
        self.table().retain(|_, lease| {
            let keep = now < lease.ends || lease.asking_until.is_some_and(|until| now < until);
            if !keep {
                self.lost.increment(lease.left);
            }
            keep
        });
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Vec<Key>, Lease>> {
        // A panic while the lock was held leaves at worst a lease unspent: take it as is.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.table().len()
    }
}

/// The most units a lease of `keys` (rate limits: name, interval, burst) asks for: a quarter of
/// the smallest burst, so that other replicas keep room; at least one.
fn most_units(keys: &[Key]) -> u64 {
    keys.iter().map(|&(_, _, burst)| burst / 4).min().unwrap_or(1).clamp(1, MAX_UNITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;

    const LENGTH: Duration = Duration::from_millis(100);
    const WAIT: Duration = Duration::from_millis(50);

    fn leases(metrics: &Metrics) -> Leases {
        let units = |result: &str| metrics.counter("bff_redis_lease_units_total", &[("result", result.to_owned())]);
        Leases::new(LENGTH, units("granted"), units("lost"))
    }

    fn ann(burst: u64) -> Vec<Key> {
        vec![("bff:rl:per-user:=ann".to_owned(), 1_000, burst)]
    }

    fn value(metrics: &Metrics, series: &str) -> f64 {
        let text = metrics.render();
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }

    /// An answer for one rate limit: `passed` of the group, the key `ahead` µs before it.
    fn answer(passed: i64, ahead: i64) -> Vec<i64> {
        vec![passed, ahead, 0]
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_key_asks_for_what_it_used_over_a_lease_and_spends_it_here() {
        let metrics = Metrics::new();
        let leases = leases(&metrics);
        let keys = ann(1_000);
        // A new key asks for itself alone; nine more checks come while it asks, and go alone.
        assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: true });
        for _ in 0..9 {
            assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: false });
        }
        leases.answered(&keys, Some((answer(1, 0), 1, 1)));
        // The next check finds no unit left: it asks for what ten checks in 10 ms make of a lease.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 100, asker: true });
        // Redis grants 40 (the key was 960 ms ahead, of a burst of 1000 ms): the request's own
        // unit at place 1, and 39 to spend here.
        leases.answered(&keys, Some((answer(40, 960_000), 1, 40)));
        let group = Group { keys: &keys, limits: 1, requests: 0 };
        for place in 2..=40 {
            let Take::Spent(statuses) = leases.take(&keys, 1, Instant::now(), WAIT) else { panic!("unit {place}") };
            // As Redis would have counted a request at that place in the group.
            assert_eq!(statuses, batch::statuses(&group, &answer(40, 960_000), place));
            assert_eq!(statuses[0].retry_after, None);
            assert_eq!(statuses[0].remaining, 40 - place);
        }
        // Spent at once: the next ask is as large as a lease may be, a quarter of the burst.
        assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 250, asker: true });
        assert_eq!(value(&metrics, r#"bff_redis_lease_units_total{result="granted"}"#), 39.0);
        assert_eq!(value(&metrics, r#"bff_redis_lease_units_total{result="lost"}"#), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_after_its_length_and_its_units_left_are_lost() {
        let metrics = Metrics::new();
        let leases = leases(&metrics);
        let keys = ann(1_000);
        assert!(matches!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { asker: true, .. }));
        leases.answered(&keys, Some((answer(10, 0), 1, 10)));
        tokio::time::advance(LENGTH - Duration::from_millis(1)).await;
        assert!(matches!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Spent(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        // Ended: the next check asks again, at what two checks in 100 ms make of a lease.
        assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 2, asker: true });
        assert_eq!(value(&metrics, r#"bff_redis_lease_units_total{result="lost"}"#), 8.0);
        // An ask that never comes back stops blocking others' asks after `WAIT`.
        tokio::time::advance(WAIT).await;
        assert!(matches!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { asker: true, .. }));
        // Once ended and asked of no more, the housekeeping forgets the key.
        tokio::time::advance(WAIT).await;
        leases.forget(Instant::now());
        assert_eq!(leases.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn quotas_and_quiet_keys_are_never_leased_and_a_lease_keeps_room_for_others() {
        let metrics = Metrics::new();
        let leases = leases(&metrics);
        let with_quota = vec![ann(1_000)[0].clone(), ("bff:quota:acme".to_owned(), 100, 3600)];
        for _ in 0..3 {
            assert_eq!(leases.take(&with_quota, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: false });
        }
        assert_eq!(leases.held(), 0);
        // A key asked for once a second asks for one unit each time: exact counting.
        let keys = ann(1_000);
        for _ in 0..3 {
            assert!(matches!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: true }));
            leases.answered(&keys, Some((answer(1, 0), 1, 1)));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // However busy, a key with a burst of 8 asks for at most 2 units, one with a burst under 4
        // for one.
        for (burst, most) in [(8, 2), (3, 1)] {
            let keys = ann(burst);
            assert!(matches!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: true }));
            leases.answered(&keys, Some((answer(1, 0), 1, 1)));
            for _ in 0..50 {
                let _ = leases.take(&keys, 1, Instant::now(), WAIT);
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            leases.answered(&keys, None);
            assert_eq!(leases.take(&keys, 1, Instant::now(), WAIT), Take::Ask { units: most, asker: true }, "{burst}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_new_keys_past_it_are_counted_one_by_one() {
        let metrics = Metrics::new();
        let leases = leases(&metrics);
        let key = |n: usize| vec![(format!("bff:rl:per-ip:10.0.{}.{}", n / 256, n % 256), 1_000, 1_000)];
        for n in 0..MAX_KEYS {
            leases.answered(&key(n), None);
            assert!(matches!(leases.take(&key(n), 1, Instant::now(), WAIT), Take::Ask { asker: true, .. }));
            leases.answered(&key(n), None);
        }
        assert_eq!(leases.held(), MAX_KEYS);
        let late = key(MAX_KEYS);
        assert_eq!(leases.take(&late, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: false });
        assert_eq!(leases.held(), MAX_KEYS);
        // Once the housekeeping forgets the ended ones, a new key is held again.
        tokio::time::advance(Duration::from_millis(1)).await;
        leases.forget(Instant::now());
        assert_eq!(leases.held(), 0);
        assert_eq!(leases.take(&late, 1, Instant::now(), WAIT), Take::Ask { units: 1, asker: true });
    }
}
