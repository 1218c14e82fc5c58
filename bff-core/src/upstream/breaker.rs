//! The circuit breaker of one upstream: after enough failures, calls fail at once for a while
//! instead of waiting on a service that is down, and a few probes find out when it is back.
//!
//! - **Closed**: calls go through and their outcomes are counted in a sliding window (ten
//!   buckets). It opens when at least `failure_percent` of the window's calls failed and there
//!   were at least `min_calls`, or after `consecutive_failures` failures in a row. The window
//!   judges a sick upstream; the run catches a dead one at once, however busy it was before
//!   (a window full of healthy calls would otherwise keep a dead upstream called for seconds).
//! - **Open**: calls fail at once as `503 UPSTREAM_CIRCUIT_OPEN` (an optional part degrades
//!   without a call) for `open_for`; opened again by failing probes, again for `open_for` through
//!   the first second of the outage, then each time one `open_for` longer, up to `max_open_for`.
//!   Short openings find the end of a brief outage (a flapping upstream) soon after it comes;
//!   a long outage costs a few probes a minute.
//! - **Half-open**: `half_open_probes` calls are let through, the rest fail at once; it closes
//!   when their failures are under `failure_percent`, and opens again as soon as they cannot be.
//!
//! It sits outside the retries: one client call is one outcome, whatever its attempts. A failure
//! is what says the service is unwell: no connection, no answer in time, a broken exchange, a
//! 5xx, or a success whose body does not decode as the caller's type (reported by the call once it
//! decoded, [`Outcomes::undecodable`]). A 4xx is the caller's business, and a call the bulkhead
//! refused never reached it; a call dropped unfinished (its request gave up) counts as nothing.
//! Each instance of a several-instance upstream has its own breaker of a kind: outlier ejection
//! (`upstream/balance.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use metrics::{Counter, Gauge};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::journal::{JournalLayer, Short};
use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::config::BreakerConfig;
use crate::observe::metrics::Metrics;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// How long after an outage began its openings stay at `open_for`, before they grow.
const FAST_PROBING: Duration = Duration::from_secs(1);

/// Wraps an upstream's stack in its breaker.
#[derive(Clone)]
pub(crate) struct BreakerLayer(Arc<Shared>, JournalLayer);

impl BreakerLayer {
    /// The breaker of upstream `name`; `None` when `config` is `None` or turned off (the stack
    /// then leaves it out of its type). Calls it refuses are journaled.
    pub(crate) fn new(
        name: &Arc<str>,
        config: Option<&BreakerConfig>,
        registry: &Metrics,
        journal: &JournalLayer,
    ) -> Option<Self> {
        let config = config.filter(|c| c.enabled)?;
        Some(Self(Arc::new(Shared::new(name, config, registry)), journal.clone()))
    }

    /// Where the calls through this breaker report what is found after it counted them.
    pub(crate) fn outcomes(&self) -> Outcomes {
        Outcomes(self.0.clone())
    }
}

/// Reports on calls a breaker counted as successes but that were not (see [`BreakerLayer::outcomes`]).
#[derive(Clone)]
pub(crate) struct Outcomes(Arc<Shared>);

impl Outcomes {
    /// The last success this breaker counted had a body that did not decode: a failure after all.
    pub(crate) fn undecodable(&self) {
        self.0.undecodable();
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker { inner, shared: self.0.clone(), journal: self.1.clone() }
    }
}

/// See [the module docs](self).
#[derive(Clone)]
pub(crate) struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
    journal: JournalLayer,
}

impl<S> Service<Outgoing> for Breaker<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Outgoing) -> Self::Future {
        let shared = &self.shared;
        match shared.admit() {
            Some(probe) => {
                call.probe = probe;
                Guarded::Tracked {
                    future: self.inner.call(call),
                    ticket: Ticket { shared: shared.clone(), probe, settled: false },
                }
            }
            None => {
                self.journal.short(&call, Short::CircuitOpen);
                Guarded::Refused {
                    error: Some(UpstreamError::new(shared.name.clone(), UpstreamErrorKind::CircuitOpen)),
                }
            }
        }
    }
}

pin_project! {
    /// A call through the breaker: counted, or refused at once.
    #[project = GuardedProj]
    pub(crate) enum Guarded<F> {
        Tracked { #[pin] future: F, ticket: Ticket },
        Refused { error: Option<UpstreamError> },
    }
}

impl<F> Future for Guarded<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            GuardedProj::Tracked { future, ticket } => {
                let result = ready!(future.poll(cx));
                ticket.settle(is_failure(&result));
                Poll::Ready(result)
            }
            GuardedProj::Refused { error } => {
                Poll::Ready(Err(error.take().map_or_else(|| "a refused call polled again".into(), Into::into)))
            }
        }
    }
}

/// Whether an outcome says the service is unwell (see [the module docs](self)).
pub(crate) fn is_failure(result: &Result<Response<Body>, BoxError>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(error) => match error.downcast_ref::<UpstreamError>() {
            Some(error) => matches!(
                error.kind(),
                UpstreamErrorKind::Connect | UpstreamErrorKind::Timeout(_) | UpstreamErrorKind::Transport
            ),
            None => !error.is::<tower::load_shed::error::Overloaded>(),
        },
    }
}

/// A call let through: reports its outcome once, or, dropped unfinished, gives back its probe.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    probe: bool,
    settled: bool,
}

impl Ticket {
    fn settle(&mut self, failed: bool) {
        if !self.settled {
            self.settled = true;
            self.shared.record(self.probe, failed);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.shared.lock().release_probe();
        }
    }
}

struct Shared {
    name: Arc<str>,
    failure_ratio: f64,
    min_calls: u32,
    consecutive_failures: u32,
    open_for: Duration,
    max_open_for: Duration,
    probes: u32,
    /// Whether the phase is `Closed`: the one thing most calls read, without the lock.
    closed: AtomicBool,
    state: Mutex<State>,
    gauge: Gauge,
    opened: Counter,
    half_opened: Counter,
    closed_again: Counter,
}

struct State {
    phase: Phase,
    window: Window,
    in_a_row: u32,
    /// The run of failures the last success ended: it goes on if that success turns out to be
    /// one that did not decode.
    run_before_success: u32,
    /// When the circuit first opened since it was last closed.
    outage_began: Option<Instant>,
    /// Openings since the first second of the outage: the n-th lasts n + 1 times `open_for`.
    openings: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: u32, passed: u32, failed: u32 },
}

impl Shared {
    fn new(name: &Arc<str>, config: &BreakerConfig, registry: &Metrics) -> Self {
        let transitions = |to: &'static str| {
            registry.counter(
                "bff_upstream_circuit_transitions_total",
                &[("upstream", name.to_string()), ("to", to.to_owned())],
            )
        };
        Self {
            name: name.clone(),
            failure_ratio: f64::from(config.failure_percent) / 100.0,
            min_calls: config.min_calls,
            consecutive_failures: config.consecutive_failures,
            open_for: config.open_for,
            max_open_for: config.max_open_for.max(config.open_for),
            probes: config.half_open_probes,
            closed: AtomicBool::new(true),
            state: Mutex::new(State {
                phase: Phase::Closed,
                window: Window::new(config.window),
                in_a_row: 0,
                run_before_success: 0,
                outage_began: None,
                openings: 0,
            }),
            gauge: registry.gauge("bff_upstream_circuit_state", &[("upstream", name.to_string())]),
            opened: transitions("open"),
            half_opened: transitions("half_open"),
            closed_again: transitions("closed"),
        }
    }

    fn lock(&self) -> StateGuard<'_> {
        StateGuard { shared: self, state: self.state.lock().unwrap_or_else(|e| e.into_inner()) }
    }

    /// Whether a call may go: `Some(true)` as a half-open probe, `Some(false)` as a plain call,
    /// `None` when the circuit is open.
    fn admit(&self) -> Option<bool> {
        if self.closed.load(Ordering::Relaxed) {
            return Some(false);
        }
        let mut guard = self.lock();
        match guard.state.phase {
            Phase::Closed => Some(false),
            Phase::Open { until } if Instant::now() >= until => {
                guard.enter(Phase::HalfOpen { probing: 1, passed: 0, failed: 0 });
                Some(true)
            }
            Phase::Open { .. } => None,
            Phase::HalfOpen { probing, passed, failed } if probing + passed + failed < self.probes => {
                guard.state.phase = Phase::HalfOpen { probing: probing + 1, passed, failed };
                Some(true)
            }
            Phase::HalfOpen { .. } => None,
        }
    }

    fn record(&self, probe: bool, failed: bool) {
        let mut guard = self.lock();
        match guard.state.phase {
            Phase::Closed => {
                let state = &mut *guard.state;
                // One reading for the window and the judgement.
                let bucket = state.window.add(Instant::now(), failed);
                if failed {
                    state.in_a_row += 1;
                } else {
                    state.run_before_success = std::mem::take(&mut state.in_a_row);
                }
                self.judge(&mut guard, bucket);
            }
            // A call let through before the circuit opened, ending now: already accounted for.
            Phase::Open { .. } => {}
            Phase::HalfOpen { .. } if !probe => {}
            Phase::HalfOpen { probing, passed, failed: so_far } => {
                let (passed, failed) = if failed { (passed, so_far + 1) } else { (passed + 1, so_far) };
                let probes = f64::from(self.probes);
                if f64::from(failed) >= self.failure_ratio * probes {
                    tracing::warn!(upstream = %self.name, failed, "probes failed: circuit open again");
                    guard.open();
                } else if passed + failed >= self.probes {
                    tracing::info!(upstream = %self.name, passed, failed, "probes succeeded: circuit closed");
                    guard.state.window.clear();
                    guard.state.in_a_row = 0;
                    guard.state.openings = 0;
                    guard.state.outage_began = None;
                    guard.state.run_before_success = 0;
                    guard.enter(Phase::Closed);
                } else {
                    guard.state.phase = Phase::HalfOpen { probing: probing.saturating_sub(1), passed, failed };
                }
            }
        }
    }

    /// Opens a closed circuit whose window or run of failures says so, in the window's bucket
    /// `current`.
    fn judge(&self, guard: &mut StateGuard<'_>, current: u64) {
        let state = &mut *guard.state;
        let (calls, failures) = state.window.totals(current);
        let by_rate = calls >= self.min_calls && f64::from(failures) >= self.failure_ratio * f64::from(calls);
        let in_a_row = self.consecutive_failures > 0 && state.in_a_row >= self.consecutive_failures;
        if by_rate || in_a_row {
            tracing::warn!(upstream = %self.name, calls, failures, in_a_row = state.in_a_row, "circuit opened");
            guard.open();
        }
    }

    /// See [`Outcomes::undecodable`]: the success is taken back and counted as a failure; a
    /// half-open circuit (most likely a probe's answer) opens again.
    fn undecodable(&self) {
        let mut guard = self.lock();
        match guard.state.phase {
            Phase::Closed => {
                let state = &mut *guard.state;
                let current = state.window.number(Instant::now());
                state.window.take_back_success(current);
                state.in_a_row = state.in_a_row.max(state.run_before_success) + 1;
                self.judge(&mut guard, current);
            }
            Phase::HalfOpen { .. } => {
                tracing::warn!(upstream = %self.name, "a probe's answer did not decode: circuit open again");
                guard.open();
            }
            Phase::Open { .. } => {}
        }
    }
}

/// The locked state, with the transitions that also update the metrics and the fast-path flag.
struct StateGuard<'a> {
    shared: &'a Shared,
    state: MutexGuard<'a, State>,
}

impl StateGuard<'_> {
    fn open(&mut self) {
        let now = Instant::now();
        let began = *self.state.outage_began.get_or_insert(now);
        if now.duration_since(began) >= FAST_PROBING {
            self.state.openings = self.state.openings.saturating_add(1);
        }
        let times = self.state.openings.saturating_add(1);
        let length = self.shared.open_for.saturating_mul(times).min(self.shared.max_open_for);
        self.enter(Phase::Open { until: now + length });
    }

    fn enter(&mut self, phase: Phase) {
        let shared = self.shared;
        let (counter, value) = match phase {
            Phase::Closed => (&shared.closed_again, 0.0),
            Phase::HalfOpen { .. } => {
                tracing::info!(upstream = %shared.name, "circuit half-open: letting probes through");
                (&shared.half_opened, 1.0)
            }
            Phase::Open { .. } => (&shared.opened, 2.0),
        };
        counter.increment(1);
        shared.gauge.set(value);
        shared.closed.store(phase == Phase::Closed, Ordering::Relaxed);
        self.state.phase = phase;
    }

    /// A probe ended without an outcome (its request gave up): its place goes to the next call.
    fn release_probe(&mut self) {
        if let Phase::HalfOpen { probing, passed, failed } = self.state.phase {
            self.state.phase = Phase::HalfOpen { probing: probing.saturating_sub(1), passed, failed };
        }
    }
}

/// Calls and failures over the last `BUCKETS` bucket lengths.
struct Window {
    origin: Instant,
    /// A bucket's length in nanoseconds, at least 1: a `u64` divides in a fraction of the time a
    /// `u128` (`Duration::as_nanos`) takes.
    bucket_nanos: u64,
    /// Per bucket: the bucket number it holds (time since `origin` in buckets), calls, failures.
    buckets: [(u64, u32, u32); BUCKETS],
}

impl Window {
    fn new(length: Duration) -> Self {
        let bucket_nanos = u64::try_from((length / BUCKETS as u32).as_nanos()).unwrap_or(u64::MAX).max(1);
        Self { origin: Instant::now(), bucket_nanos, buckets: [(u64::MAX, 0, 0); BUCKETS] }
    }

    /// The bucket `now` falls in, counted from the window's start (`u64` nanoseconds last 584
    /// years).
    fn number(&self, now: Instant) -> u64 {
        let since = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        since / self.bucket_nanos
    }

    /// Counts a call ending at `now`; the bucket it went to.
    fn add(&mut self, now: Instant, failed: bool) -> u64 {
        let number = self.number(now);
        let slot = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if slot.0 != number {
            *slot = (number, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(failed);
        number
    }

    /// Counts the latest success in the window, at bucket `current`, as a failure instead.
    fn take_back_success(&mut self, current: u64) {
        let latest = self
            .buckets
            .iter_mut()
            .filter(|(number, calls, failures)| {
                *number != u64::MAX && current - number < BUCKETS as u64 && failures < calls
            })
            .max_by_key(|(number, ..)| *number);
        if let Some(slot) = latest {
            slot.2 += 1;
        }
    }

    /// Calls and failures in the window, at bucket `current`.
    fn totals(&self, current: u64) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|(number, ..)| *number != u64::MAX && current - number < BUCKETS as u64)
            .fold((0, 0), |(calls, failures), (_, c, f)| (calls + c, failures + f))
    }

    fn clear(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use http::{HeaderValue, Request, StatusCode};
    use serde_json::Value;

    use super::super::{Upstream, UpstreamSettings};
    use super::*;

    /// An upstream that answers 500 while `failing` is set, else 200, counting the calls that
    /// reach it.
    fn switchable(breaker: BreakerConfig, metrics: &Metrics) -> (Upstream, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let failing = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let (fails, counted) = (failing.clone(), calls.clone());
        let service = tower::service_fn(move |_: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let status = if fails.load(Ordering::SeqCst) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
            async move {
                let mut response = Response::new(Body::from("{}"));
                *response.status_mut() = status;
                Ok::<_, BoxError>(response)
            }
        });
        let settings = UpstreamSettings { breaker: Some(breaker), ..UpstreamSettings::bare() };
        (Upstream::from_service("users", settings, service, metrics), failing, calls)
    }

    async fn call(up: &Upstream) -> Result<Value, UpstreamError> {
        up.get::<Value>("/u").send_within(HeaderValue::from_static("r"), Instant::now() + Duration::from_secs(1)).await
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_percent: 50.0,
            min_calls: 10,
            window: Duration::from_secs(10),
            consecutive_failures: 0,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
            ..BreakerConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_half_opens_and_closes_on_recovery() {
        let metrics = Metrics::new();
        let (up, failing, calls) = switchable(config(), &metrics);
        // Under the minimum of calls, failures do not open it.
        for _ in 0..9 {
            assert_eq!(
                call(&up).await.unwrap_err().kind(),
                &UpstreamErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
        // The tenth failure in the window does.
        assert!(call(&up).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        // Open: calls fail at once, without reaching the upstream.
        for _ in 0..20 {
            let error = call(&up).await.unwrap_err();
            assert_eq!(error.kind(), &UpstreamErrorKind::CircuitOpen);
            assert_eq!((error.status().as_u16(), error.code()), (503, "UPSTREAM_CIRCUIT_OPEN"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10, "no call while open");
        // After the cool-down, a failing probe opens it again.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
        assert_eq!(calls.load(Ordering::SeqCst), 11);
        // The service recovers: after the next cool-down (twice as long, the second opening in a
        // row), two probes succeed and it closes.
        failing.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
        tokio::time::advance(Duration::from_secs(1)).await;
        call(&up).await.unwrap();
        call(&up).await.unwrap();
        for _ in 0..10 {
            call(&up).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 23);
        let text = metrics.render();
        for line in [
            r#"bff_upstream_circuit_transitions_total{upstream="users",to="open"} 2"#,
            r#"bff_upstream_circuit_transitions_total{upstream="users",to="half_open"} 2"#,
            r#"bff_upstream_circuit_transitions_total{upstream="users",to="closed"} 1"#,
            r#"bff_upstream_circuit_state{upstream="users"} 0"#,
            r#"bff_upstream_requests_total{upstream="users",outcome="circuit_open"} 22"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_the_probes_through() {
        // Three failures, then answers held until the gate opens.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (held, counted) = (gate.clone(), calls.clone());
        let service = tower::service_fn(move |_: Request<Body>| {
            let (n, gate) = (counted.fetch_add(1, Ordering::SeqCst), held.clone());
            async move {
                let mut response = Response::new(Body::from("{}"));
                if n < 3 {
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                } else {
                    let _pass = gate.acquire().await;
                }
                Ok::<_, BoxError>(response)
            }
        });
        let settings = UpstreamSettings {
            breaker: Some(BreakerConfig { consecutive_failures: 3, ..config() }),
            ..UpstreamSettings::bare()
        };
        let up = Upstream::from_service("users", settings, service, &Metrics::new());
        for _ in 0..3 {
            assert!(call(&up).await.is_err());
        }
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen, "3 in a row open it");
        tokio::time::advance(Duration::from_secs(5)).await;
        // Two probes in flight hold both places: a third call fails at once.
        let probes = [tokio::spawn(call_owned(up.clone())), tokio::spawn(call_owned(up.clone()))];
        while calls.load(Ordering::SeqCst) < 5 {
            tokio::task::yield_now().await;
        }
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
        gate.add_permits(100);
        for probe in probes {
            probe.await.unwrap().unwrap();
        }
        // Both succeeded: closed.
        call(&up).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    async fn call_owned(up: Upstream) -> Result<Value, UpstreamError> {
        call(&up).await
    }

    /// However busy it was, an upstream that dies is cut off after `consecutive_failures` calls
    /// (issue 25: a window full of healthy calls used to keep it called for seconds); half-open,
    /// one failed probe of three (under 50%) still closes it.
    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_open_it_at_any_traffic_and_probes_close_on_their_rate() {
        let breaker = BreakerConfig { consecutive_failures: 3, half_open_probes: 3, ..config() };
        let (up, failing, calls) = switchable(breaker, &Metrics::new());
        failing.store(false, Ordering::SeqCst);
        for _ in 0..1_000 {
            call(&up).await.unwrap();
        }
        failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(
                call(&up).await.unwrap_err().kind(),
                &UpstreamErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
        assert_eq!(calls.load(Ordering::SeqCst), 1_003, "three failures in a row after 1,000 successes");
        // Half-open: a failure, then two successes: 1 of 3 is under 50%, so it closes.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(call(&up).await.is_err());
        failing.store(false, Ordering::SeqCst);
        call(&up).await.unwrap();
        call(&up).await.unwrap();
        for _ in 0..5 {
            call(&up).await.unwrap();
        }
        // Failures that are not in a row leave it closed while the window's rate is under 50%.
        for n in 0..100 {
            failing.store(n % 3 == 0, Ordering::SeqCst);
            let _ = call(&up).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1_111, "never refused");
    }

    /// Opened again by failing probes, it stays open `open_for` through the first second of the
    /// outage, then one `open_for` longer each time, up to `max_open_for`; closed, it starts
    /// again from `open_for`.
    #[tokio::test(start_paused = true)]
    async fn each_opening_in_a_row_lasts_longer_up_to_the_cap() {
        let breaker = BreakerConfig {
            consecutive_failures: 1,
            half_open_probes: 1,
            open_for: Duration::from_millis(100),
            max_open_for: Duration::from_millis(350),
            ..config()
        };
        let (up, failing, calls) = switchable(breaker, &Metrics::new());
        /// How long the circuit refuses calls, probing every millisecond until one goes through.
        async fn open_for(up: &Upstream, calls: &AtomicUsize) -> Duration {
            let (start, before) = (Instant::now(), calls.load(Ordering::SeqCst));
            loop {
                let _ = call(up).await;
                if calls.load(Ordering::SeqCst) > before {
                    return start.elapsed();
                }
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert!(call(&up).await.is_err(), "the first failure opens it");
        let mut lengths = Vec::new();
        for _ in 0..14 {
            lengths.push(open_for(&up, &calls).await.as_millis());
        }
        assert_eq!(lengths, [[100; 10].as_slice(), &[200, 300, 350, 350]].concat(), "each probe failed");
        // A probe succeeds: closed; the next outage opens it for `open_for` again.
        failing.store(false, Ordering::SeqCst);
        assert_eq!(open_for(&up, &calls).await.as_millis(), 350);
        call(&up).await.unwrap();
        failing.store(true, Ordering::SeqCst);
        assert!(call(&up).await.is_err());
        assert_eq!(open_for(&up, &calls).await.as_millis(), 100);
    }

    /// The onset of an outage at the traffic of sixteen callers (issue 25): after a healthy
    /// warm-up, the upstream starts failing every call; with the default breaker and retries,
    /// it is cut off within 50 calls and 250 ms of the switch.
    #[tokio::test(start_paused = true)]
    async fn a_busy_upstream_that_dies_is_cut_off_within_50_calls_and_250ms() {
        let fault = super::super::switchable::Switch::default();
        let service = super::super::switchable::switchable(Duration::from_millis(2), fault.clone());
        let calls = fault.calls.clone();
        let settings = UpstreamSettings {
            breaker: Some(BreakerConfig::default()),
            retry: crate::config::RetryConfig::default(),
            ..UpstreamSettings::bare()
        };
        let up = Upstream::from_service("users", settings, service, &Metrics::new());
        let switch = Instant::now() + Duration::from_secs(5);
        let end = switch + Duration::from_secs(1);
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (up, calls) = (up.clone(), calls.clone());
                tokio::spawn(async move {
                    let mut cut_off = None;
                    while Instant::now() < end {
                        let result = call(&up).await;
                        if Instant::now() < switch {
                            result.expect("healthy");
                        } else if cut_off.is_none()
                            && result.is_err_and(|e| e.kind() == &UpstreamErrorKind::CircuitOpen)
                        {
                            cut_off = Some((Instant::now(), calls.load(Ordering::SeqCst)));
                        }
                        // A client's think time, so that it loops at a steady rate when refused.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    cut_off
                })
            })
            .collect();
        tokio::time::sleep_until(switch).await;
        fault.fail(true);
        let before = calls.load(Ordering::SeqCst);
        assert!(before > 10_000, "a busy warm-up: {before} calls");
        let mut cuts = Vec::new();
        for caller in callers {
            cuts.push(caller.await.unwrap().expect("every caller was refused in the end"));
        }
        let (when, calls_by_then) = cuts.into_iter().min().expect("sixteen callers");
        let (took, by_then) = (when - switch, calls_by_then - before);
        assert!(took <= Duration::from_millis(250), "cut off after {took:?}");
        assert!(by_then <= 50, "cut off after {by_then} calls");
        // Then the sixteen calls in flight at most end, with what the budget's ten saved retries
        // allow, and three probes go every 100 ms.
        let in_the_second = calls.load(Ordering::SeqCst) - before;
        let bound = by_then + 16 + 10 + 10 * 3;
        assert!(in_the_second <= bound, "{in_the_second} calls in the second after the switch, {by_then} by the cut");
    }

    /// A `200` whose body does not decode as the caller's type is a failure for the breaker
    /// (issue 25: a "malformed" upstream used to give 502s for ever with the breaker closed);
    /// a body that decodes, or a `Reply` read as it is, is not.
    #[tokio::test(start_paused = true)]
    async fn a_success_that_does_not_decode_is_a_failure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::new(Body::from("<html>not json"))) }
        });
        let breaker = BreakerConfig { consecutive_failures: 5, ..config() };
        let settings = UpstreamSettings { breaker: Some(breaker), ..UpstreamSettings::bare() };
        let up = Upstream::from_service("users", settings, service, &Metrics::new());
        let deadline = || Instant::now() + Duration::from_secs(1);
        // Read as they are, the answers are fine: nothing is counted against the upstream.
        for _ in 0..20 {
            up.get::<Value>("/u").reply().send_within(HeaderValue::from_static("r"), deadline()).await.unwrap();
        }
        for _ in 0..5 {
            assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::Decode);
        }
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen, "five in a row");
        assert_eq!(calls.load(Ordering::SeqCst), 25);
        // Half-open, a probe whose answer does not decode opens it again.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::Decode);
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window_and_client_errors_do_not_count() {
        let (up, failing, calls) = switchable(config(), &Metrics::new());
        for _ in 0..9 {
            assert!(call(&up).await.is_err());
        }
        // Ten seconds on, those nine have left the window.
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..9 {
            assert!(call(&up).await.is_err());
        }
        failing.store(false, Ordering::SeqCst);
        call(&up).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 19, "never opened");
        // 404s are answers, not failures.
        let not_found = tower::service_fn(|_: Request<Body>| async {
            let mut response = Response::new(Body::from("{}"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, BoxError>(response)
        });
        let settings = UpstreamSettings { breaker: Some(config()), ..UpstreamSettings::bare() };
        let up = Upstream::from_service("users", settings, not_found, &Metrics::new());
        for _ in 0..30 {
            assert!(call(&up).await.unwrap_err().is_not_found());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_unfinished_gives_its_place_back() {
        let hang = Arc::new(AtomicBool::new(false));
        let hanging = hang.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            let hang = hanging.load(Ordering::SeqCst);
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Err::<Response<Body>, BoxError>("down".into())
            }
        });
        let breaker = BreakerConfig { consecutive_failures: 1, half_open_probes: 1, ..config() };
        // Over HTTP/2 an abandoned call is dropped (over HTTP/1.1 it would finish in the
        // background, and its timeout would count).
        let settings = UpstreamSettings {
            breaker: Some(breaker),
            protocol: crate::config::UpstreamProtocol::Http2,
            ..UpstreamSettings::bare()
        };
        let up = Upstream::from_service("users", settings, service, &Metrics::new());
        assert!(call(&up).await.is_err());
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
        tokio::time::advance(Duration::from_secs(5)).await;
        hang.store(true, Ordering::SeqCst);
        // The probe hangs and is dropped unfinished (its client went away): the next call is the
        // probe instead.
        let probe =
            up.get::<Value>("/u").send_within(HeaderValue::from_static("r"), Instant::now() + Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_millis(50), probe).await.is_err());
        hang.store(false, Ordering::SeqCst);
        let probe = call(&up).await.unwrap_err();
        assert_eq!(probe.kind(), &UpstreamErrorKind::Transport, "a probe went through: {probe:?}");
        // No probe outlives its request's deadline: a hanging one ends with it (and, a failure,
        // opens the circuit again). The second opening in a row lasts twice `open_for`.
        tokio::time::advance(Duration::from_secs(10)).await;
        hang.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let probe =
            up.get::<Value>("/u").send_within(HeaderValue::from_static("r"), start + Duration::from_millis(100));
        assert!(probe.await.unwrap_err().is_timeout());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(call(&up).await.unwrap_err().kind(), &UpstreamErrorKind::CircuitOpen);
    }
}
