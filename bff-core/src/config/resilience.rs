//! The resilience sections of an upstream: retries, the circuit breaker, outlier ejection.
//!
//! Each sits in `defaults` and may be overridden, as a whole section, per upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When and how often a failed call is sent again (`upstream/retry.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 turns retries off.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// The statuses worth another attempt (connect errors and per-try timeouts always are).
    #[serde(default = "default_retry_statuses")]
    pub statuses: Vec<u16>,
    /// The first backoff's ceiling; each next one doubles, up to `backoff_max` (full jitter: the
    /// wait is uniform between zero and the ceiling).
    #[serde(with = "humantime_serde", default = "default_backoff_base")]
    pub backoff_base: Duration,
    /// The largest backoff ceiling.
    #[serde(with = "humantime_serde", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Retries (and hedges) at most this percentage of the calls…
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f32,
    /// …plus this many a second, so a quiet upstream can still be retried; no more than this many
    /// are saved up (`upstream/budget.rs`), so the healthy calls before an outage do not pay for
    /// its first calls' retries.
    #[serde(default = "default_budget_min_per_sec")]
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_retry_attempts(),
            statuses: default_retry_statuses(),
            backoff_base: default_backoff_base(),
            backoff_max: default_backoff_max(),
            budget_percent: default_budget_percent(),
            budget_min_per_sec: default_budget_min_per_sec(),
        }
    }
}

impl RetryConfig {
    /// Checks the values, naming the key at fault under `at` (`defaults.retry`).
    pub(crate) fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.attempts == 0 {
            return Err((format!("{at}.attempts"), "must be at least 1 (1: no retries)".to_owned()));
        }
        if !(0.0..=1000.0).contains(&self.budget_percent) {
            return Err((format!("{at}.budget_percent"), "must be between 0 and 1000".to_owned()));
        }
        if self.backoff_max < self.backoff_base {
            return Err((format!("{at}.backoff_max"), "must be at least backoff_base".to_owned()));
        }
        Ok(())
    }
}

fn default_retry_attempts() -> u32 {
    3
}

fn default_retry_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}

fn default_backoff_base() -> Duration {
    Duration::from_millis(10)
}

fn default_backoff_max() -> Duration {
    Duration::from_millis(200)
}

fn default_budget_percent() -> f32 {
    20.0
}

fn default_budget_min_per_sec() -> u32 {
    10
}

/// When an upstream's circuit opens, and how it closes again (`upstream/breaker.rs`).
///
/// On by default for every upstream; `enabled = false` in `defaults.breaker` turns it off for all,
/// in `upstreams.<name>.breaker` for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// `false` turns off a breaker `defaults` turned on, for one upstream.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Opens when at least this percentage of the calls in `window` failed…
    #[serde(default = "default_failure_percent")]
    pub failure_percent: f32,
    /// …and there were at least this many of them.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// The sliding window the failure rate is measured over.
    #[serde(with = "humantime_serde", default = "default_window")]
    pub window: Duration,
    /// It also opens after this many failures in a row (0: never on this), whatever the traffic
    /// before: the window's rate reacts to a busy upstream dying only once the failures
    /// outweigh the successes of the whole window, this at once.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long it stays open (calls fail at once) before letting probes through, the first
    /// time; opened again by failing probes, the n-th time in a row n times this…
    #[serde(with = "humantime_serde", default = "default_open_for")]
    pub open_for: Duration,
    /// …up to this (or `open_for`, if longer). Short first openings end a brief outage's cost
    /// soon after it ends; longer ones keep a dead upstream at a few probes a minute.
    #[serde(with = "humantime_serde", default = "default_max_open_for")]
    pub max_open_for: Duration,
    /// Calls let through while half-open; it closes when, all of them answered, their failures
    /// are under `failure_percent`, and opens again as soon as they cannot be.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_percent: default_failure_percent(),
            min_calls: default_min_calls(),
            window: default_window(),
            consecutive_failures: default_consecutive_failures(),
            open_for: default_open_for(),
            max_open_for: default_max_open_for(),
            half_open_probes: default_half_open_probes(),
        }
    }
}

impl BreakerConfig {
    /// Checks the values, naming the key at fault under `at` (`defaults.breaker`).
    pub(crate) fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((format!("{at}.{key}"), message.to_owned()));
        if !(self.failure_percent > 0.0 && self.failure_percent <= 100.0) {
            return bad("failure_percent", "must be over 0 and at most 100");
        }
        if self.min_calls == 0 {
            return bad("min_calls", "must be at least 1");
        }
        if self.window < Duration::from_millis(10) {
            return bad("window", "must be at least 10ms");
        }
        if self.open_for.is_zero() {
            return bad("open_for", "must be greater than zero");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "must be at least 1");
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_failure_percent() -> f32 {
    50.0
}
fn default_min_calls() -> u32 {
    20
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_consecutive_failures() -> u32 {
    20
}
fn default_open_for() -> Duration {
    Duration::from_millis(100)
}
fn default_max_open_for() -> Duration {
    Duration::from_secs(10)
}
fn default_half_open_probes() -> u32 {
    3
}

/// Outlier ejection among an upstream's instances (`url = [...]`; `upstream/balance.rs`): an
/// instance that keeps failing is taken out of the rotation for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Ejects an instance after this many failures in a row (0: never).
    #[serde(default = "default_outlier_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th in a row lasts n times this…
    #[serde(with = "humantime_serde", default = "default_base_ejection")]
    pub base_ejection: Duration,
    /// …up to this.
    #[serde(with = "humantime_serde", default = "default_max_ejection")]
    pub max_ejection: Duration,
    /// At most this percentage of the instances is out at once (and never all of them).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_outlier_failures(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

impl OutlierConfig {
    /// Checks the values, naming the key at fault under `at` (`defaults.outlier`).
    pub(crate) fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.base_ejection.is_zero() {
            return Err((format!("{at}.base_ejection"), "must be greater than zero".to_owned()));
        }
        if self.max_ejection < self.base_ejection {
            return Err((format!("{at}.max_ejection"), "must be at least base_ejection".to_owned()));
        }
        if self.max_ejection_percent > 100 {
            return Err((format!("{at}.max_ejection_percent"), "must be at most 100".to_owned()));
        }
        Ok(())
    }
}

fn default_outlier_failures() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(10)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    50
}
