//! The retry budget of one upstream: a token bucket that every call fills by `budget_percent`
//! of a retry, and time by `budget_min_per_sec` retries a second, holding at most
//! `budget_min_per_sec` (at least one); each retry or hedge takes one.
//!
//! Over any stretch of time, retries are at most `budget_percent` of the calls plus the floor's
//! share of the time and the bucket's size: the bound the onset of an outage needs (issue 25).
//! Why not the alternatives (measured in bench/README.md, "The onset of an outage"): a window of
//! banked tokens lets the healthy calls before an outage pay for its first calls' retries; counting
//! retries in flight against calls in flight holds a retry's place through its backoff, far longer
//! than a call lasts, and so refuses most of what a flaky upstream needs.

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use crate::config::RetryConfig;

/// See [the module docs](self).
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// Tokens in the bucket, and when time last filled it.
    bucket: Mutex<(f64, Instant)>,
    /// What a call puts in.
    per_call: f64,
    /// What a second puts in.
    per_sec: f64,
    /// The most it holds.
    capacity: f64,
}

impl RetryBudget {
    /// The budget `config` describes, full.
    pub(crate) fn new(config: &RetryConfig) -> Self {
        let capacity = f64::from(config.budget_min_per_sec.max(1));
        Self {
            bucket: Mutex::new((capacity, Instant::now())),
            per_call: f64::from(config.budget_percent) / 100.0,
            per_sec: f64::from(config.budget_min_per_sec),
            capacity,
        }
    }

    /// Counts a call (its first attempt).
    pub(crate) fn deposit(&self) {
        let mut bucket = self.lock();
        // A full bucket stays full, whatever the time since it was last filled: the clock is
        // read only while it is not (most calls find it full in steady traffic).
        if bucket.0 >= self.capacity {
            return;
        }
        self.fill(&mut bucket);
        bucket.0 = (bucket.0 + self.per_call).min(self.capacity);
    }

    /// Takes a retry's token; `false` when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let mut bucket = self.lock();
        self.fill(&mut bucket);
        let enough = bucket.0 >= 1.0;
        if enough {
            bucket.0 -= 1.0;
        }
        enough
    }

    fn lock(&self) -> MutexGuard<'_, (f64, Instant)> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds to `bucket` what the time since it was last filled pays for, up to its size.
    fn fill(&self, bucket: &mut (f64, Instant)) {
        let now = Instant::now();
        let earned = now.saturating_duration_since(bucket.1).as_secs_f64() * self.per_sec;
        *bucket = ((bucket.0 + earned).min(self.capacity), now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(percent: f32, per_sec: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            budget_percent: percent,
            budget_min_per_sec: per_sec,
            ..RetryConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn calls_and_time_fill_it_up_to_its_size() {
        let budget = budget(20.0, 3);
        // Full: three retries, then none.
        assert!((0..3).all(|_| budget.withdraw()));
        assert!(!budget.withdraw());
        // Five calls pay for one.
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        // A second pays for three; a long quiet spell for no more than three.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!((0..3).all(|_| budget.withdraw()));
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..1_000 {
            budget.deposit();
        }
        assert!((0..3).all(|_| budget.withdraw()), "a thousand healthy calls bank no more than the size");
        assert!(!budget.withdraw());
    }

    /// Time spent full earns nothing: after an idle minute the bucket holds its size, and no
    /// more retries than that are taken from it; calls found full do not change it.
    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_earns_nothing_more() {
        let budget = budget(20.0, 3);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| budget.withdraw()));
        assert!(!budget.withdraw(), "an idle minute saved up no more than the size");
        tokio::time::advance(Duration::from_secs(60)).await;
        budget.deposit();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| budget.withdraw()));
        assert!(!budget.withdraw(), "a call that found it full changed nothing");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(budget.withdraw(), "half a second pays one and a half");
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_floor_only_calls_pay() {
        let budget = budget(50.0, 0);
        assert!(budget.withdraw(), "it starts with one");
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!budget.withdraw());
        budget.deposit();
        budget.deposit();
        assert!(budget.withdraw());
    }
}
