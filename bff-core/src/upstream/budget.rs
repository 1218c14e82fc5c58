//! The retry budget of one upstream, as Envoy's: retries and hedges **in flight** at most
//! `budget_percent` of the calls in flight, and never fewer than `budget_min_in_flight`.
//!
//! Counting in-flight work rather than banking tokens over a window keeps the bound at any
//! moment, the first second of an outage included: a budget of banked tokens starts full, and
//! lets the first calls against a dead upstream retry as often as they like.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::RetryConfig;

/// Calls and resends (retries, hedges) in flight to one upstream.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    calls: AtomicUsize,
    resends: AtomicUsize,
    ratio: f64,
    min: usize,
}

impl RetryBudget {
    /// The budget `config` describes.
    pub(crate) fn new(config: &RetryConfig) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            resends: AtomicUsize::new(0),
            ratio: f64::from(config.budget_percent) / 100.0,
            min: config.budget_min_in_flight as usize,
        })
    }

    /// Counts a call in flight until the guard is dropped.
    pub(crate) fn call(self: &Arc<Self>) -> InFlight {
        self.calls.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A place for one resend, held until the guard is dropped; `None` when the budget is spent.
    pub(crate) fn resend(self: &Arc<Self>) -> Option<Resend> {
        let calls = self.calls.load(Ordering::Relaxed);
        let allowed = ((calls as f64 * self.ratio) as usize).max(self.min);
        self.resends
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |resends| (resends < allowed).then_some(resends + 1))
            .ok()
            .map(|_| Resend(self.clone()))
    }
}

/// A call counted in flight (see [`RetryBudget::call`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<RetryBudget>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A resend counted in flight (see [`RetryBudget::resend`]).
#[derive(Debug)]
pub(crate) struct Resend(Arc<RetryBudget>);

impl Drop for Resend {
    fn drop(&mut self) {
        self.0.resends.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: f32, min: u32) -> Arc<RetryBudget> {
        RetryBudget::new(&RetryConfig { budget_percent: percent, budget_min_in_flight: min, ..RetryConfig::default() })
    }

    #[test]
    fn resends_in_flight_stay_within_the_share_of_calls_in_flight() {
        let budget = budget(20.0, 1);
        // One call in flight: the floor allows one resend, and only one.
        let call = budget.call();
        let first = budget.resend().expect("the floor");
        assert!(budget.resend().is_none());
        // Twenty calls in flight: four resends at once.
        let more: Vec<InFlight> = (0..19).map(|_| budget.call()).collect();
        let resends: Vec<Resend> = (0..3).map(|_| budget.resend().expect("20% of 20")).collect();
        assert!(budget.resend().is_none(), "a fifth");
        // A resend ending gives its place back; calls ending shrink the share.
        drop(resends);
        drop(more);
        assert!(budget.resend().is_none(), "one call in flight, one resend already");
        drop(first);
        assert!(budget.resend().is_some());
        drop(call);
        assert_eq!(budget.calls.load(Ordering::Relaxed), 0);
        assert_eq!(budget.resends.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_floor_and_no_calls_means_no_resend() {
        let budget = budget(20.0, 0);
        assert!(budget.resend().is_none());
        let _calls: Vec<InFlight> = (0..4).map(|_| budget.call()).collect();
        assert!(budget.resend().is_none(), "20% of 4 rounds down to 0");
    }
}
