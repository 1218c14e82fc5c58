//! Retries with a budget: a failed attempt is sent again when that is safe and worth it, and
//! never so often that retries multiply an outage.
//!
//! - **Safe**: the method is idempotent (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`), or the call
//!   carries an `Idempotency-Key`; and its body can be sent again (not a stream).
//! - **Worth it**: the attempt could not connect, ran out of its per-try time, or answered one of
//!   the configured statuses (500, 502, 503, 504 by default).
//! - **Bounded**: at most `attempts` in all; exponential backoff with full jitter between them; a
//!   budget per upstream (`upstream/budget.rs`): retries at most `budget_percent` of the calls,
//!   plus `budget_min_per_sec`, with no more than that floor saved up; and never a wait that ends
//!   past the request's deadline. Each attempt ends by the deadline too (`upstream/timeout.rs`):
//!   this is what keeps a call with retries within its request's deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Method, Response, StatusCode};
use metrics::Counter;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tower::util::rng::{HasherRng, Rng};

use super::budget::RetryBudget;
use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::config::RetryConfig;
use crate::idempotency::IDEMPOTENCY_KEY;
use crate::observe::metrics::Metrics;

/// The retry layer of one upstream: [`Retry`] around the rest of its stack, sharing the budget.
///
/// Rather than tower's `Retry`, which copies its whole service into every call's future and
/// keeps a policy per call: here a call's future holds the copy of the call and of the stack
/// below only when another attempt can follow, and a wait between attempts is boxed, made only
/// when a retry is.
#[derive(Clone)]
pub(crate) struct Retries(Arc<Shared>);

struct Shared {
    attempts: u32,
    statuses: Vec<StatusCode>,
    base: Duration,
    max: Duration,
    budget: Arc<RetryBudget>,
    rng: Mutex<HasherRng>,
    retried: Counter,
    exhausted: Counter,
}

impl Retries {
    /// The policy for `config`, paid from `budget` (see [`budget`]), or `None` when it allows one
    /// attempt only.
    pub(crate) fn new(name: &str, config: &RetryConfig, budget: Arc<RetryBudget>, registry: &Metrics) -> Option<Self> {
        if config.attempts <= 1 {
            return None;
        }
        let counter = |outcome: &'static str| {
            let labels = [("upstream", name.to_owned()), ("outcome", outcome.to_owned())];
            registry.counter("bff_upstream_retries_total", &labels)
        };
        let statuses = config.statuses.iter().filter_map(|s| StatusCode::from_u16(*s).ok()).collect();
        let shared = Shared {
            attempts: config.attempts,
            statuses,
            base: config.backoff_base,
            max: config.backoff_max,
            budget,
            rng: Mutex::new(HasherRng::new()),
            retried: counter("retried"),
            exhausted: counter("budget_exhausted"),
        };
        Some(Self(Arc::new(shared)))
    }
}

impl<S> tower::Layer<S> for Retries {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry { shared: self.0.clone(), inner }
    }
}

impl Shared {
    /// Whether `result` is worth another attempt.
    fn worth_it(&self, result: &Result<Response<Body>, BoxError>) -> bool {
        match result {
            Ok(response) => self.statuses.contains(&response.status()),
            Err(e) => e
                .downcast_ref::<UpstreamError>()
                .is_some_and(|e| matches!(e.kind(), UpstreamErrorKind::Connect | UpstreamErrorKind::Timeout(_))),
        }
    }

    /// The wait after the `made`th attempt: full jitter, uniform in `0..=min(max, base·2ⁿ)`.
    fn backoff(&self, made: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1 << made.min(16)).min(self.max);
        let fraction = self.rng.lock().unwrap_or_else(|e| e.into_inner()).next_f64();
        ceiling.mul_f64(fraction)
    }

    /// The wait before sending `next` (a copy of the call) again after the `made`th attempt
    /// ended in `result`; `None` when it is not sent again: the result is not worth it, the wait
    /// would end past the deadline, or the budget has nothing left (then counted).
    fn wait(&self, made: u32, next: &Outgoing, result: &Result<Response<Body>, BoxError>) -> Option<Duration> {
        if !self.worth_it(result) {
            return None;
        }
        let wait = self.backoff(made);
        if Instant::now() + wait >= next.context.deadline {
            return None;
        }
        if !self.budget.withdraw() {
            self.exhausted.increment(1);
            return None;
        }
        self.retried.increment(1);
        Some(wait)
    }

    /// A copy of `call` for the attempt after the `made`th, if one may follow.
    fn copy(&self, made: u32, call: &Outgoing) -> Option<Outgoing> {
        (made < self.attempts && safe_to_repeat(call)).then(|| call.try_clone()).flatten()
    }
}

/// Whether sending `call` again is safe: an idempotent method, or an `Idempotency-Key`.
fn safe_to_repeat(call: &Outgoing) -> bool {
    let request = &call.request;
    matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE)
        || request.headers().contains_key(IDEMPOTENCY_KEY)
}

/// Sends a call through `inner`, and again, as [the module docs](self) say.
#[derive(Clone)]
pub(crate) struct Retry<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> Service<Outgoing> for Retry<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Outgoing) -> RetryFuture<S> {
        // The first attempt is the call the budget counts.
        self.shared.budget.deposit();
        let next = self.shared.copy(1, &call);
        let future = self.inner.call(call);
        let again = next.map(|next| Again { shared: self.shared.clone(), service: self.inner.clone(), made: 1, next });
        RetryFuture { state: State::Called { future }, again }
    }
}

/// What a call that may be sent again keeps while an attempt runs.
struct Again<S> {
    shared: Arc<Shared>,
    /// The stack below, to send the next attempt through.
    service: S,
    /// Attempts made so far.
    made: u32,
    /// The copy of the call the next attempt sends.
    next: Outgoing,
}

pin_project! {
    /// A call's future through [`Retry`].
    pub(crate) struct RetryFuture<S: Service<Outgoing>> {
        #[pin]
        state: State<S::Future>,
        // `None` once no other attempt can follow (or none could from the start).
        again: Option<Again<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// An attempt in flight.
        Called { #[pin] future: F },
        /// The wait before the next attempt, then that attempt's wait for the stack's readiness.
        Waiting { sleep: Pin<Box<Sleep>> },
    }
}

impl<S> Future for RetryFuture<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    let Some(again) = this.again.as_mut() else { return Poll::Ready(result) };
                    let Some(wait) = again.shared.wait(again.made, &again.next, &result) else {
                        return Poll::Ready(result);
                    };
                    again.next.resend("retry");
                    this.state.set(State::Waiting { sleep: Box::pin(tokio::time::sleep(wait)) });
                }
                StateProj::Waiting { sleep } => {
                    // (A sleep that has ended is ready each time it is polled again.)
                    ready!(sleep.as_mut().poll(cx));
                    // `again` is set in this state: it is left only by this attempt being sent.
                    let Some(Again { shared, mut service, made, next }) = this.again.take() else {
                        return Poll::Ready(Err("a retry's call was lost".into()));
                    };
                    if service.poll_ready(cx)?.is_pending() {
                        *this.again = Some(Again { shared, service, made, next });
                        return Poll::Pending;
                    }
                    let made = made + 1;
                    let following = shared.copy(made, &next);
                    let future = service.call(next);
                    *this.again = following.map(|next| Again { shared, service, made, next });
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderValue, Request};
    use serde_json::Value;

    use super::super::{Upstream, UpstreamSettings};
    use super::*;

    /// An upstream answering `statuses` in turn (the last one from then on), counting attempts.
    fn answering(statuses: &'static [u16], retry: RetryConfig) -> (Upstream, Arc<AtomicUsize>) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = statuses[n.min(statuses.len() - 1)];
                let mut response = Response::new(Body::from("{}"));
                *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                Ok::<_, BoxError>(response)
            }
        });
        let settings = UpstreamSettings { retry, ..UpstreamSettings::bare() };
        (Upstream::from_service("flaky", settings, service, &Metrics::new()), attempts)
    }

    fn three_attempts() -> RetryConfig {
        RetryConfig { attempts: 3, ..RetryConfig::default() }
    }

    fn deadline(after: Duration) -> Instant {
        Instant::now() + after
    }

    #[tokio::test(start_paused = true)]
    async fn a_flaky_get_is_retried_and_succeeds() {
        let (up, attempts) = answering(&[503, 200], three_attempts());
        let call = up.get::<Value>("/x").send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2)));
        call.await.unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // At most `attempts` in all.
        let (up, attempts) = answering(&[503], three_attempts());
        let call = up.get::<Value>("/x").send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2)));
        assert!(call.await.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    /// Each attempt's headers, as the upstream saw them: a retry's copy of a call with headers of
    /// its own and of one without (whose copy starts with an empty map) carries the same.
    #[tokio::test(start_paused = true)]
    async fn every_attempt_carries_the_stacks_headers_and_the_calls_own() {
        for own in [false, true] {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = seen.clone();
            let service = tower::service_fn(move |request: Request<Body>| {
                let mut seen = log.lock().unwrap();
                seen.push(request.headers().clone());
                let status = if seen.len() < 3 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                async move {
                    let mut response = Response::new(Body::from("{}"));
                    *response.status_mut() = status;
                    Ok::<_, BoxError>(response)
                }
            });
            let settings = UpstreamSettings { retry: three_attempts(), ..UpstreamSettings::bare() };
            let up = Upstream::from_service("flaky", settings, service, &Metrics::new());
            let call = up.get::<Value>("/x");
            let call = if own { call.header("if-none-match", "\"v1\"") } else { call };
            call.send_within(HeaderValue::from_static("r-9"), deadline(Duration::from_secs(2))).await.unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 3);
            for headers in seen.iter() {
                assert_eq!(headers["x-request-id"], "r-9");
                assert!(headers.contains_key(super::super::headers::DEADLINE_MS), "{headers:?}");
                assert_eq!(headers.get("if-none-match").is_some(), own, "{headers:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_retried_only_with_an_idempotency_key() {
        let (up, attempts) = answering(&[503, 201], three_attempts());
        let call = up.post::<Value>("/orders").json(&serde_json::json!({"a": 1}));
        assert!(call.send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2))).await.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "a POST without a key is sent once");
        let (up, attempts) = answering(&[503, 201], three_attempts());
        let call = up.post::<Value>("/orders").json(&serde_json::json!({"a": 1})).header(IDEMPOTENCY_KEY, "k-1");
        call.send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2))).await.unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_dead_upstream_retries_stay_within_the_budget() {
        let retry = RetryConfig { attempts: 3, budget_percent: 20.0, budget_min_per_sec: 1, ..RetryConfig::default() };
        let (up, attempts) = answering(&[500], retry);
        let calls = 1_000;
        for _ in 0..calls {
            let call =
                up.get::<Value>("/x").send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2)));
            assert!(call.await.is_err());
        }
        let made = attempts.load(Ordering::SeqCst);
        // 20% of the calls, plus the floor (1 a second, 1 saved up) over the seconds of backoff.
        let seconds = 1 + Instant::now().elapsed().as_secs() as usize;
        assert!(made <= calls + calls / 5 + seconds + 1, "{made} attempts for {calls} calls");
        assert!(made > calls, "no retry at all");
    }

    /// The onset of an outage (issue 25): sixteen callers in a loop against an upstream that
    /// fails every call after 1 ms, right after a healthy spell. In every second, the first
    /// included, the attempts stay within 1.2× the calls plus the floor: the healthy calls before
    /// saved up no more than the floor's ten retries.
    #[tokio::test(start_paused = true)]
    async fn an_outage_after_healthy_traffic_is_retried_within_the_budget_from_its_first_second() {
        let fault = super::super::switchable::Switch::default();
        let service = super::super::switchable::switchable(Duration::from_millis(1), fault.clone());
        let attempts = fault.calls.clone();
        let retry = three_attempts();
        let floor = retry.budget_min_per_sec as usize;
        let settings = UpstreamSettings { retry, ..UpstreamSettings::bare() };
        let up = Upstream::from_service("users", settings, service, &Metrics::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let switch = Instant::now() + Duration::from_secs(2);
        let end = switch + Duration::from_secs(3);
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (up, calls) = (up.clone(), calls.clone());
                tokio::spawn(async move {
                    while Instant::now() < end {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let call = up.get::<Value>("/x");
                        let _ = call.send_within(HeaderValue::from_static("r"), deadline(Duration::from_secs(2))).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep_until(switch).await;
        fault.fail(true);
        let mut seen = (calls.load(Ordering::SeqCst), attempts.load(Ordering::SeqCst));
        for second in 1..=3 {
            tokio::time::sleep_until(switch + Duration::from_secs(second)).await;
            let now = (calls.load(Ordering::SeqCst), attempts.load(Ordering::SeqCst));
            let (calls, made) = (now.0 - seen.0, now.1 - seen.1);
            let bound = 1.2 * calls as f64 + 2.0 * floor as f64;
            assert!(made as f64 <= bound, "second {second}: {made} attempts for {calls} calls");
            assert!(
                made as f64 >= 1.15 * calls as f64,
                "second {second}: {made} attempts for {calls} calls: budget unused"
            );
            seen = now;
        }
        for caller in callers {
            caller.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_outlives_the_deadline() {
        // The backoff would end past the deadline: no second attempt.
        let slow_backoff = RetryConfig {
            attempts: 5,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let (up, attempts) = answering(&[503], slow_backoff);
        let start = Instant::now();
        let call =
            up.get::<Value>("/x").send_within(HeaderValue::from_static("r"), deadline(Duration::from_millis(300)));
        assert!(call.await.is_err());
        assert!(start.elapsed() <= Duration::from_millis(300), "{:?}", start.elapsed());
        assert!(attempts.load(Ordering::SeqCst) <= 2);
        // Attempts that each run out of their per-try time end with the deadline. (No backoff:
        // a random one could stop the retries early, when the next wait would cross the
        // deadline, which makes the end time random.)
        let hanging = tower::service_fn(|_: Request<Body>| std::future::pending::<Result<Response<Body>, BoxError>>());
        let no_backoff = RetryConfig {
            attempts: 10,
            backoff_base: Duration::ZERO,
            backoff_max: Duration::ZERO,
            ..RetryConfig::default()
        };
        let settings =
            UpstreamSettings { timeout: Duration::from_millis(100), retry: no_backoff, ..UpstreamSettings::bare() };
        let up = Upstream::from_service("hangs", settings, hanging, &Metrics::new());
        let start = Instant::now();
        let call =
            up.get::<Value>("/x").send_within(HeaderValue::from_static("r"), deadline(Duration::from_millis(250)));
        let error = call.await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }
}
