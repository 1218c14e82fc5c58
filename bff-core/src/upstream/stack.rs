//! The outbound stack of one upstream: its layers and their order, written down once.
//!
//! Outermost first, every call passes through:
//!
//! 1. **cache** (`upstream/cache.rs`), when `cache_bytes` is set: GETs answered from memory
//!    while the upstream's `Cache-Control` says they are fresh, revalidated once stale, served
//!    stale on failure within `stale-if-error`. Then **coalescing** (`upstream/coalesce.rs`),
//!    when `coalesce` is on: identical GETs in flight at once share one call (a follower stops
//!    waiting at its own deadline).
//! 2. **resilience**, outermost first, each present when configured:
//!    - the **circuit breaker** (`upstream/breaker.rs`): after too many failures, calls fail at
//!      once as `UPSTREAM_CIRCUIT_OPEN` until probes find the upstream back;
//!    - **retries** with a budget when `retry.attempts` is over 1 (`upstream/retry.rs`), and the
//!      resend of a call an HTTP/2 upstream turned away unprocessed (`upstream/unprocessed.rs`);
//!    - **hedging** when `hedge_after` is set (`upstream/hedge.rs`): a GET not answered by then
//!      is sent again, within the retry budget (`upstream/budget.rs`);
//!    - the **bulkhead** when `max_in_flight` is set (`upstream/bulkhead.rs`): a call over the
//!      cap fails at once as `UPSTREAM_OVERLOADED`;
//!    - the **balance** over several instances (`upstream/balance.rs`): power of two choices,
//!      a retry to an instance not yet tried, outlier ejection. From here on, per instance.
//! 3. the **journal** (`upstream/journal.rs`), one layer: the attempt's headers, first those of
//!    every call (`upstream/headers.rs`: the request id, the deadline and the verified caller's
//!    identity, `X-User-Id`, `X-User-Scopes`, `X-Partner-Account`, from the call's context), then
//!    the request's trace (`traceparent` with the attempt's own span id, `tracestate`); and the
//!    attempt recorded in the access log, the attempt histogram and its span. The cache, the
//!    breaker and the bulkhead journal the calls they answer or refuse with no attempt.
//! 4. **per-try timeout** (`upstream/timeout.rs`): one attempt, its body included, takes at
//!    most the upstream's `timeout` and never runs past the request's deadline; it hands the
//!    attempt's HTTP request to the client. No wait between attempts runs past the deadline
//!    either, so no call outlives it, retries and waits included, with one timer armed per
//!    attempt (`upstream/timeout.rs` has why).
//! 5. **HTTP client** (`upstream/transport.rs`): hyper's connections in a pool of ours; reads the
//!    body whole under a limit unless the call asked for a stream.
//!
//! Each layer is a tower [`Layer`](tower::Layer) over [`Outgoing`] (the request with its
//! context, `upstream/outgoing.rs`) / `http::Response<Body>` with [`BoxError`] errors, so tower's
//! own (`limit`, and `retry` for the HTTP/2 resend) stack in the slots as they are (retries with
//! a budget are ours: `upstream/retry.rs` has why); [`Outbound`] erases the result (the
//! cache and coalescing, when either is on, around the rest erased on its own). The breaker,
//! retries, hedging and bulkhead are in the stack's type only when on. Inside
//! the per-try timeout, the attempt's own layers (`upstream/attempt.rs`) and the client get the
//! plain `http::Request<Body>`.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Service, ServiceBuilder};

use super::balance::Balance;
use super::breaker::{BreakerLayer, Outcomes};
use super::budget::RetryBudget;
use super::bulkhead::Bulkhead;
use super::cache::CacheLayer;
use super::coalesce::CoalesceLayer;
use super::hedge::HedgeLayer;
use super::journal::JournalLayer;
use super::outgoing::{Outgoing, Tried};
use super::retry::Retries;
use super::timeout::{PerTry, TimeBoundLayer};
use super::{Body, BoxError, UpstreamSettings, unprocessed};
use crate::config::UpstreamProtocol;
use crate::observe::metrics::Metrics;

/// An upstream's whole outbound stack (or, over `http::Request<Body>`, an attempt's own layers:
/// `upstream/attempt.rs`), type-erased; a tower [`Service`] itself.
///
/// Rather than tower's `BoxCloneSyncService` (a boxed clone of the stack, then a boxed future:
/// two allocations a call), the stack sits behind an `Arc`, and a call clones the concrete stack
/// (reference counts only) into its one boxed future.
pub(crate) struct Outbound<R = Outgoing> {
    stack: Arc<dyn Erased<R>>,
    /// The breaker's reports, when the stack has one: what the call finds after the stack
    /// answered (a body that does not decode).
    outcomes: Option<Outcomes>,
    /// Whether a call's copies (retries, hedges) go to another instance than those tried: each
    /// call then gets a [`Tried`] set, which its copies share.
    tracks_tried: bool,
}

impl<R> Clone for Outbound<R> {
    fn clone(&self) -> Self {
        Self { stack: self.stack.clone(), outcomes: self.outcomes.clone(), tracks_tried: self.tracks_tried }
    }
}

trait Erased<R>: Send + Sync {
    /// Makes the call now.
    fn call(&self, request: R) -> BoxFuture<'static, Result<Response<Body>, BoxError>>;

    /// Makes the call when its future is first polled.
    fn call_on_poll(&self, request: R) -> BoxFuture<'static, Result<Response<Body>, BoxError>>;
}

impl<S, R> Erased<R> for S
where
    S: Service<R, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    fn call(&self, request: R) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        let mut stack = self.clone();
        // The stack is ready at once (no slot waits: the bulkhead refuses a call over its cap
        // when it is made), so the call is made here and its future boxed as it is. A stack that
        // is not ready goes into `oneshot`, which holds it and the request until it is, then the
        // call's future in their place (an `async` block would hold all three at once).
        // `Service::` by name: `stack.call` would be this method, on `&stack`.
        match Service::poll_ready(&mut stack, &mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(Ok(())) => Box::pin(Service::call(&mut stack, request)),
            std::task::Poll::Ready(Err(error)) => Box::pin(std::future::ready(Err(error))),
            std::task::Poll::Pending => Box::pin(tower::ServiceExt::oneshot(stack, request)),
        }
    }

    fn call_on_poll(&self, request: R) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        Box::pin(tower::ServiceExt::oneshot(self.clone(), request))
    }
}

impl<R: Send + 'static> Outbound<R> {
    /// Erases `stack`.
    pub(crate) fn new<S>(stack: S) -> Self
    where
        S: Service<R, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self { stack: Arc::new(stack), outcomes: None, tracks_tried: false }
    }

    /// Sends `request` through the stack now (readiness included): for a call being made, as
    /// by a layer around the stack.
    pub(crate) fn send(&self, request: R) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        Erased::call(&*self.stack, request)
    }

    /// The answer the stack gave last as a success did not decode: its breaker, if any, counts
    /// a failure instead.
    pub(crate) fn undecodable(&self) {
        if let Some(outcomes) = &self.outcomes {
            outcomes.undecodable();
        }
    }
}

impl Outbound {
    /// Sends `call` through the stack, with the [`Tried`] set its copies share when the stack
    /// has several instances to send them to: now, or when its future is first polled
    /// (`on_first_poll`), as futures usually do. Now saves moving the call's future once.
    pub(crate) fn send_call(
        &self,
        mut call: Outgoing,
        on_first_poll: bool,
    ) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        if self.tracks_tried {
            call.tried = Some(Tried::default());
        }
        if on_first_poll { Erased::call_on_poll(&*self.stack, call) } else { Erased::call(&*self.stack, call) }
    }
}

impl<R> std::fmt::Debug for Outbound<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").finish_non_exhaustive()
    }
}

impl<R: Send + 'static> Service<R> for Outbound<R> {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        // Each call asks for readiness itself, on its own clone of the stack.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.send(request)
    }
}

/// Builds the stack of [the module docs](self) over `clients`, the innermost services: one per
/// instance, with its URL.
pub(crate) fn build<S>(
    name: &Arc<str>,
    settings: &UpstreamSettings,
    clients: Vec<(String, S)>,
    registry: &Metrics,
) -> Outbound
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let several = clients.len() > 1;
    let breaker = settings.breaker.as_ref().filter(|b| b.enabled);
    let journal = JournalLayer::new(name, registry, breaker.is_some());
    let attempts = clients
        .into_iter()
        .map(|(url, client)| {
            let attempt = ServiceBuilder::new()
                .layer(journal.instance(&url))
                .layer(TimeBoundLayer::new(name.clone(), PerTry(settings.timeout)))
                .service(client);
            (url, attempt)
        })
        .collect();
    let balanced = Balance::new(name, &settings.outlier, attempts, registry);
    // Retries and hedges share the upstream's budget.
    let budget = Arc::new(RetryBudget::new(&settings.retry));
    let retries = Retries::new(name, &settings.retry, budget.clone(), registry);
    let hedge = HedgeLayer::new(name, settings.hedge_after, budget, retries.is_none(), registry);
    let breaker = BreakerLayer::new(name, breaker, registry, &journal);
    let outcomes = breaker.as_ref().map(BreakerLayer::outcomes);
    let outer = Outer {
        cache: CacheLayer::new(name, settings.cache_bytes, registry, &journal),
        coalesce: CoalesceLayer::new(name, settings.coalesce, registry),
        resilience: Resilience {
            http1: settings.protocol == UpstreamProtocol::Http1,
            retries,
            hedge,
            breaker,
            several,
        },
    };
    // The bulkhead, innermost of the per-upstream slots: a call over the cap is refused at once.
    let outbound = match settings.max_in_flight {
        Some(cap) => outer.around(Bulkhead::new(balanced, cap.get(), journal)),
        None => outer.around(balanced),
    };
    Outbound { outcomes, ..outbound }
}

/// The slots outside the bulkhead, each `None` when off.
struct Outer {
    cache: Option<CacheLayer>,
    coalesce: Option<CoalesceLayer>,
    resilience: Resilience,
}

impl Outer {
    /// The slots around `inner`, erased.
    fn around<S>(self, inner: S) -> Outbound
    where
        S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let Self { cache, coalesce, resilience } = self;
        let resilient = resilience.around(inner);
        if cache.is_none() && coalesce.is_none() {
            return resilient;
        }
        // The cache and coalescing around the rest erased on its own: off (as on most
        // upstreams), they are not in the stack's type at all, so no call moves its future
        // through their empty slots.
        let shared = ServiceBuilder::new().option_layer(cache).option_layer(coalesce).service(resilient.clone());
        Outbound { stack: Arc::new(shared), ..resilient }
    }
}

/// The slots from the breaker to the bulkhead.
struct Resilience {
    http1: bool,
    breaker: Option<BreakerLayer>,
    retries: Option<Retries>,
    hedge: Option<HedgeLayer>,
    several: bool,
}

/// `outer` around `inner`, erased, with the HTTP/2 resend innermost unless `http1` (over
/// HTTP/1.1 nothing is turned away unprocessed in a way worth resending: hyper already resends
/// a call that never left on a closed pooled connection).
macro_rules! erased {
    ($http1:expr, $outer:expr, $inner:expr) => {
        match $http1 {
            true => Outbound::new($outer.service($inner)),
            false => Outbound::new($outer.layer(unprocessed::layer()).service($inner)),
        }
    };
}

impl Resilience {
    /// The slots around `inner`, erased.
    ///
    /// Each slot is in the stack's type only when it is on, one arm per combination, rather
    /// than in a slot that is either the layer or nothing (`option_layer`): such a slot costs
    /// every call a move of the whole future inside it, on or off (`bench/README.md`).
    fn around<S>(self, inner: S) -> Outbound
    where
        S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let Self { http1, breaker, retries, hedge, several } = self;
        // With several instances, a call's copies (retries, hedges) share the set of instances
        // tried, so that a copy goes to another.
        let tracks_tried = several && (retries.is_some() || hedge.is_some());
        let builder = ServiceBuilder::new();
        let outbound = match (breaker, retries, hedge) {
            (Some(b), Some(r), Some(h)) => erased!(http1, builder.layer(b).layer(r).layer(h), inner),
            (Some(b), Some(r), None) => erased!(http1, builder.layer(b).layer(r), inner),
            (Some(b), None, Some(h)) => erased!(http1, builder.layer(b).layer(h), inner),
            (Some(b), None, None) => erased!(http1, builder.layer(b), inner),
            (None, Some(r), Some(h)) => erased!(http1, builder.layer(r).layer(h), inner),
            (None, Some(r), None) => erased!(http1, builder.layer(r), inner),
            (None, None, Some(h)) => erased!(http1, builder.layer(h), inner),
            (None, None, None) => erased!(http1, builder, inner),
        };
        Outbound { tracks_tried, ..outbound }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::HeaderValue;
    use tokio::sync::Semaphore;
    use tokio::time::Instant;

    use crate::upstream::UpstreamErrorKind;

    use crate::Ctx;
    use crate::observe::metrics::Metrics;
    use crate::upstream::{Body, BoxError, Upstream, UpstreamSettings};

    /// Every move of a future copies all of it, and handler futures are moved and boxed on every
    /// request: a call's future holds the stack's boxed future and little else, and a fan-out of
    /// three stays under 1 KiB.
    #[tokio::test]
    async fn call_and_fanout_futures_stay_small() {
        let answer = |_: http::Request<Body>| async { Ok::<_, BoxError>(http::Response::new(Body::from("{}"))) };
        let up = Upstream::from_service("x", UpstreamSettings::bare(), tower::service_fn(answer), &Metrics::new());
        let ctx = Ctx::detached(Duration::from_secs(1), 4);
        let call = up.get::<serde_json::Value>("/x").send(&ctx);
        assert!(size_of_val(&call) <= 40, "a call's future is {} bytes", size_of_val(&call));
        let three = ctx.fanout((
            up.get::<serde_json::Value>("/a").required(),
            up.get::<serde_json::Value>("/b").required(),
            up.get::<serde_json::Value>("/c").optional(),
        ));
        assert!(size_of_val(&three) < 1024, "a fan-out of three is {} bytes", size_of_val(&three));
    }

    /// The erased stack's boxed future holds the call's future (the stack was ready at once),
    /// or the stack and the request until the call: never all three.
    #[tokio::test]
    async fn the_erased_stack_holds_the_stack_or_its_call_not_both() {
        let held = [7_u8; 1024];
        let stack = tower::service_fn(move |_: http::Request<Body>| {
            let ballast = [held[0]; 2048];
            async move {
                std::hint::black_box(&ballast);
                Ok::<_, BoxError>(http::Response::new(Body::empty()))
            }
        });
        let sent = super::Outbound::new(stack).send(http::Request::new(Body::empty()));
        let size = size_of_val(&*sent);
        assert!(size < 1024 + 2048, "a stack of 1 KiB with calls of 2 KiB is boxed in {size} bytes");
        sent.await.unwrap();
    }

    /// A stack ready at once is called when the call is sent; one that is not yet ready is
    /// called once it is, when its future runs; one that fails to get ready fails the call.
    #[tokio::test]
    async fn a_stack_not_ready_at_once_is_called_when_it_is() {
        #[derive(Clone)]
        struct Warming {
            /// Readiness asked, then calls made.
            polls: Arc<AtomicUsize>,
            calls: Arc<AtomicUsize>,
            /// How many times it answers `Pending` first; `usize::MAX`: it fails instead.
            cold_for: usize,
        }
        impl tower::Service<http::Request<Body>> for Warming {
            type Response = http::Response<Body>;
            type Error = BoxError;
            type Future = std::future::Ready<Result<http::Response<Body>, BoxError>>;

            fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
                let polls = self.polls.fetch_add(1, Ordering::SeqCst);
                if self.cold_for == usize::MAX {
                    return std::task::Poll::Ready(Err("never warms".into()));
                }
                if polls < self.cold_for {
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, _: http::Request<Body>) -> Self::Future {
                self.calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok(http::Response::new(Body::empty())))
            }
        }
        let stack = |cold_for| Warming { polls: Arc::default(), calls: Arc::default(), cold_for };
        let ready = stack(0);
        let sent = super::Outbound::new(ready.clone()).send(http::Request::new(Body::empty()));
        assert_eq!(ready.calls.load(Ordering::SeqCst), 1, "called when sent");
        sent.await.unwrap();
        let warming = stack(2);
        let sent = super::Outbound::new(warming.clone()).send(http::Request::new(Body::empty()));
        assert_eq!(warming.calls.load(Ordering::SeqCst), 0, "not called before it is ready");
        sent.await.unwrap();
        assert_eq!((warming.polls.load(Ordering::SeqCst), warming.calls.load(Ordering::SeqCst)), (3, 1));
        let failing = stack(usize::MAX);
        let error = super::Outbound::new(failing.clone()).send(http::Request::new(Body::empty())).await.unwrap_err();
        assert_eq!(error.to_string(), "never warms");
        assert_eq!(failing.calls.load(Ordering::SeqCst), 0);
    }

    /// Every combination of breaker, retries and hedging builds its own stack: each slot that
    /// is on acts (a retry answers a `503`, a hedge a hanging attempt), and none that is off.
    #[tokio::test(start_paused = true)]
    async fn each_combination_of_slots_has_what_is_on_and_nothing_else() {
        use crate::config::{BreakerConfig, RetryConfig};
        for combination in 0..8_u8 {
            let (breaker, retries, hedge) = (combination & 1 != 0, combination & 2 != 0, combination & 4 != 0);
            let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::<String>::new()));
            // `/flaky` answers `503` the first time, `/slow` never answers the first time; both
            // answer `{}` after.
            let answer = move |request: http::Request<Body>| {
                let first = seen.lock().unwrap().insert(request.uri().path().to_owned());
                async move {
                    match (request.uri().path(), first) {
                        ("/flaky", true) => {
                            let mut response = http::Response::new(Body::empty());
                            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            Ok::<_, BoxError>(response)
                        }
                        ("/slow", true) => std::future::pending().await,
                        _ => Ok(http::Response::new(Body::from("{}"))),
                    }
                }
            };
            let settings = UpstreamSettings {
                breaker: breaker.then(BreakerConfig::default),
                retry: RetryConfig { attempts: if retries { 2 } else { 1 }, ..RetryConfig::default() },
                hedge_after: hedge.then_some(Duration::from_millis(50)),
                ..UpstreamSettings::bare()
            };
            let metrics = Metrics::new();
            let up = Upstream::from_service("x", settings, tower::service_fn(answer), &metrics);
            let send = |path: &'static str| {
                let deadline = Instant::now() + Duration::from_secs(1);
                up.get::<serde_json::Value>(path).send_within(HeaderValue::from_static("r"), deadline)
            };
            let on = format!("breaker {breaker}, retries {retries}, hedge {hedge}");
            let flaky = send("/flaky").await;
            assert_eq!(flaky.is_ok(), retries, "{on}: {flaky:?}");
            let slow = send("/slow").await;
            assert_eq!(slow.is_ok(), hedge, "{on}: {slow:?}");
            let text = metrics.render();
            assert_eq!(text.contains(r#"bff_upstream_circuit_state{upstream="x"}"#), breaker, "{on}: {text}");
        }
    }

    /// The bulkhead refuses the call over the cap at once while the others proceed, and lets
    /// calls in again as those end.
    #[tokio::test]
    async fn the_bulkhead_refuses_the_call_over_the_cap_at_once() {
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let (held, counted) = (gate.clone(), entered.clone());
        let answer = move |_: http::Request<Body>| {
            let gate = held.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let _pass = gate.acquire().await;
                Ok::<_, BoxError>(http::Response::new(Body::from("{}")))
            }
        };
        let settings = UpstreamSettings { max_in_flight: NonZeroUsize::new(2), ..UpstreamSettings::bare() };
        let metrics = Metrics::new();
        let up = Upstream::from_service("orders", settings, tower::service_fn(answer), &metrics);
        let call = |up: &Upstream| {
            let deadline = Instant::now() + Duration::from_secs(5);
            up.get::<serde_json::Value>("/o").send_within(HeaderValue::from_static("b"), deadline)
        };
        let (first, second) = (tokio::spawn(call(&up)), tokio::spawn(call(&up)));
        // Both in flight, holding the two places.
        while entered.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = tokio::time::timeout(Duration::from_secs(1), call(&up)).await.expect("refused at once");
        assert_eq!(refused.unwrap_err().kind(), &UpstreamErrorKind::Overloaded);
        gate.add_permits(2);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        gate.add_permits(1);
        call(&up).await.unwrap();
        let text = metrics.render();
        assert!(text.contains(r#"bff_upstream_requests_total{upstream="orders",outcome="overloaded"} 1"#), "{text}");
        let shed = r#"bff_upstream_attempt_duration_seconds_count{upstream="orders",outcome="shed"} 1"#;
        assert!(text.contains(shed), "the refusal is journaled: {text}");
    }
}
