//! Hedging (optional per upstream, `hedge_after`): a GET that has not answered by then is sent
//! a second time, to another instance when there are several, and the first good answer wins.
//!
//! A hedge is a retry sent early, so it is paid from the upstream's retry budget: when the
//! budget is spent, the call just keeps waiting for its first attempt. It waits only while the
//! first attempt runs, and each attempt ends by the request's deadline (`upstream/timeout.rs`),
//! so the call does too; the attempt that loses is dropped.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Either};
use http::{Method, Response};
use metrics::Counter;
use tower::{Layer, Service, ServiceExt};

use super::budget::RetryBudget;
use super::outgoing::Outgoing;
use super::{Body, BoxError};
use crate::observe::metrics::Metrics;

/// Hedges an upstream's GETs.
#[derive(Clone)]
pub(crate) struct HedgeLayer(Arc<Shared>);

struct Shared {
    after: Duration,
    budget: Arc<RetryBudget>,
    /// Whether calls are counted into the budget here (when no retry policy does it).
    deposits: bool,
    hedged: Counter,
    refused: Counter,
}

impl HedgeLayer {
    /// Hedging after `after`, paid from `budget` (into which this layer counts each call when
    /// `deposits`); `None` when `after` is (the stack then leaves it out of its type).
    pub(crate) fn new(
        name: &str,
        after: Option<Duration>,
        budget: Arc<RetryBudget>,
        deposits: bool,
        registry: &Metrics,
    ) -> Option<Self> {
        after.map(|after| {
            let counter = |outcome: &'static str| {
                let labels = [("upstream", name.to_owned()), ("outcome", outcome.to_owned())];
                registry.counter("bff_upstream_hedges_total", &labels)
            };
            let (hedged, refused) = (counter("sent"), counter("budget_exhausted"));
            Self(Arc::new(Shared { after, budget, deposits, hedged, refused }))
        })
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge { inner, shared: self.0.clone() }
    }
}

/// See [the module docs](self).
#[derive(Clone)]
pub(crate) struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Whether an outcome is worth waiting past for the other attempt.
fn failed(result: &Result<Response<Body>, BoxError>) -> bool {
    result.as_ref().map_or(true, |response| response.status().is_server_error())
}

impl<S> Service<Outgoing> for Hedge<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Outgoing) -> Self::Future {
        let shared = &self.shared;
        if shared.deposits {
            shared.budget.deposit();
        }
        let copy = if call.request.method() == Method::GET { call.try_clone() } else { None };
        let Some(mut copy) = copy else { return Either::Left(self.inner.call(call)) };
        let (first, spare, shared) = (self.inner.call(call), self.inner.clone(), shared.clone());
        Either::Right(
            async move {
                let mut first = pin!(first);
                tokio::select! {
                    biased;
                    result = &mut first => return result,
                    () = tokio::time::sleep(shared.after) => {}
                }
                if !shared.budget.withdraw() {
                    shared.refused.increment(1);
                    return first.await;
                }
                shared.hedged.increment(1);
                copy.resend("hedge");
                let mut second = pin!(spare.oneshot(copy));
                tokio::select! {
                    result = &mut first => if failed(&result) { second.await } else { result },
                    result = &mut second => if failed(&result) { first.await } else { result },
                }
            }
            .boxed(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderValue, Request};
    use serde_json::Value;
    use tokio::time::Instant;

    use super::super::{Upstream, UpstreamSettings};
    use super::*;

    /// Two instances: the first never answers, the second at once. Counts calls per instance.
    fn one_hangs(hedge_after: Duration) -> (Upstream, Arc<[AtomicUsize; 2]>, Metrics) {
        let calls: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        let instances = (0..2)
            .map(|i| {
                let calls = calls.clone();
                tower::service_fn(move |_: Request<Body>| {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                    async move {
                        if i == 0 {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, BoxError>(Response::new(Body::from("{}")))
                    }
                })
            })
            .collect();
        let metrics = Metrics::new();
        let settings = UpstreamSettings {
            hedge_after: Some(hedge_after),
            timeout: Duration::from_secs(5),
            ..UpstreamSettings::bare()
        };
        (Upstream::from_services("reviews", settings, instances, &metrics), calls, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_a_hanging_instance_answers_at_about_the_hedge_delay() {
        let (up, calls, metrics) = one_hangs(Duration::from_millis(50));
        let mut slow = 0;
        for _ in 0..20 {
            let start = Instant::now();
            let deadline = start + Duration::from_secs(2);
            up.get::<Value>("/r").send_within(HeaderValue::from_static("r"), deadline).await.unwrap();
            let took = start.elapsed();
            assert!(took == Duration::ZERO || took == Duration::from_millis(50), "{took:?}");
            slow += usize::from(took > Duration::ZERO);
        }
        assert!(slow > 0, "no call landed on the hanging instance");
        assert_eq!(calls[0].load(Ordering::SeqCst), slow);
        assert_eq!(calls[1].load(Ordering::SeqCst), 20, "each hedge went to the other instance");
        let text = metrics.render();
        assert!(
            text.contains(&format!(r#"bff_upstream_hedges_total{{upstream="reviews",outcome="sent"}} {slow}"#)),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedge_outlives_the_deadline_and_writes_are_never_hedged() {
        let hanging = Arc::new(AtomicUsize::new(0));
        let counted = hanging.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Response<Body>, BoxError>>()
        });
        let settings = UpstreamSettings { hedge_after: Some(Duration::from_millis(50)), ..UpstreamSettings::bare() };
        let up = Upstream::from_service("reviews", settings, service, &Metrics::new());
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        let error = up.get::<Value>("/r").send_within(HeaderValue::from_static("r"), deadline).await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(hanging.load(Ordering::SeqCst), 1, "the deadline came before the hedge");
        let deadline = Instant::now() + Duration::from_millis(200);
        let write = up.post::<Value>("/r").json(&1).send_within(HeaderValue::from_static("r"), deadline);
        assert!(write.await.unwrap_err().is_timeout());
        assert_eq!(hanging.load(Ordering::SeqCst), 2, "a POST is sent once");
    }
}
