//! Coalescing (singleflight): identical GETs to one upstream in flight at once share one call.
//!
//! Identical means the same URI, the same headers set by the call, and the same verified caller
//! (the identity headers the call will carry): two users' personal GETs are never merged. Only
//! buffered GETs take part (a stream is read by one caller).
//!
//! The first call leads: it goes through the rest of the stack (breaker, retries, …) as usual,
//! and its response, read whole, is copied to every follower. A follower whose deadline is
//! earlier than the flight's stops waiting at its own; the flight itself lives as long as one of
//! its callers waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use http::Response;
use metrics::Counter;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::outgoing::Outgoing;
use super::snapshot::{CallKey, Shareable, Snapshot};
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::identity::CallerHeaders;
use crate::observe::metrics::Metrics;

/// Past this many flights in the table, finished ones abandoned by all their callers are swept.
const SWEEP_ABOVE: usize = 4096;

/// Coalesces an upstream's calls.
#[derive(Clone)]
pub(crate) struct CoalesceLayer(Arc<Flights>);

impl CoalesceLayer {
    /// Coalescing for upstream `name`; `None` when off (the stack leaves it out with tower's
    /// `option_layer`).
    pub(crate) fn new(name: &Arc<str>, on: bool, registry: &Metrics) -> Option<Self> {
        on.then(|| {
            Self(Arc::new(Flights {
                name: name.clone(),
                table: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                coalesced: registry.counter("bff_upstream_coalesced_total", &[("upstream", name.to_string())]),
            }))
        })
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;

    fn layer(&self, inner: S) -> Coalesce<S> {
        Coalesce { inner, flights: self.0.clone() }
    }
}

/// See [the module docs](self).
#[derive(Clone)]
pub(crate) struct Coalesce<S> {
    inner: S,
    flights: Arc<Flights>,
}

pub(crate) struct Flights {
    name: Arc<str>,
    table: Mutex<HashMap<Key, InFlight>>,
    next_id: AtomicU64,
    coalesced: Counter,
}

type Outcome = Result<Arc<Snapshot>, UpstreamError>;

struct InFlight {
    id: u64,
    deadline: Instant,
    flight: WeakShared<BoxFuture<'static, Outcome>>,
}

/// The same call on behalf of the same caller.
type Key = (CallKey, Option<CallerHeaders>);

impl Flights {
    /// Takes a finished flight off the table (unless a newer one has its key by now).
    fn land(&self, key: &Key, id: u64) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.get(key).is_some_and(|f| f.id == id) {
            table.remove(key);
        }
    }
}

impl<S> Service<Outgoing> for Coalesce<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A call readies the rest of the stack only when it leads: a follower must not hold a
        // place in the bulkhead.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Outgoing) -> Self::Future {
        let flights = &self.flights;
        let Some(Shareable { key, caller, deadline }) = Shareable::of(&request) else {
            return self.inner.clone().oneshot(request).boxed();
        };
        let key = (key, caller);
        let mut table = flights.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(joined) = table.get(&key).and_then(|f| Some((f.flight.upgrade()?, f.deadline))) {
            drop(table);
            flights.coalesced.increment(1);
            let (flight, flight_deadline) = joined;
            // A flight that may outlive this call's deadline is only waited for until then.
            let until = (flight_deadline > deadline).then_some(deadline);
            return wait(flight, until, flights.name.clone()).boxed();
        }
        let id = flights.next_id.fetch_add(1, Ordering::Relaxed);
        let call = self.inner.clone().oneshot(request);
        let (landing, name, key_back) = (flights.clone(), flights.name.clone(), key.clone());
        let flight = async move {
            let result = call.await;
            landing.land(&key_back, id);
            match result {
                Ok(response) => Snapshot::of(response).map(Arc::new).map_err(|_| {
                    UpstreamError::new(name, UpstreamErrorKind::Transport).with_cause("a stream cannot be shared")
                }),
                Err(error) => Err(UpstreamError::from_stack(&name, error)),
            }
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            if table.len() >= SWEEP_ABOVE {
                table.retain(|_, f| f.flight.upgrade().is_some());
            }
            table.insert(key, InFlight { id, deadline, flight: weak });
        }
        drop(table);
        wait(flight, None, flights.name.clone()).boxed()
    }
}

/// Waits for `flight` (until `until`, if given) and copies its response.
async fn wait(
    flight: Shared<BoxFuture<'static, Outcome>>,
    until: Option<Instant>,
    name: Arc<str>,
) -> Result<Response<Body>, BoxError> {
    let outcome = match until {
        None => flight.await,
        Some(until) => match tokio::time::timeout_at(until, flight).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let budget = until.saturating_duration_since(Instant::now());
                return Err(UpstreamError::new(name, UpstreamErrorKind::Timeout(budget)).into());
            }
        },
    };
    match outcome {
        Ok(snapshot) => Ok(snapshot.to_response()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use http::Request;
    use serde_json::Value;

    use super::super::{Upstream, UpstreamSettings};
    use super::*;
    use crate::Ctx;

    /// An upstream that answers after `gate` opens, counting calls and echoing the caller.
    fn gated(coalesce: bool) -> (Upstream, Arc<tokio::sync::Semaphore>, Arc<AtomicUsize>, Metrics) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (held, counted) = (gate.clone(), calls.clone());
        let service = tower::service_fn(move |request: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let gate = held.clone();
            let user = request.headers().get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
            async move {
                let _pass = gate.acquire().await;
                Ok::<_, BoxError>(Response::new(Body::from(format!(r#"{{"user":"{user}"}}"#).into_bytes())))
            }
        });
        let metrics = Metrics::new();
        // A bulkhead of two: followers wait without holding a place in it.
        let settings = UpstreamSettings { coalesce, max_in_flight: NonZeroUsize::new(2), ..UpstreamSettings::bare() };
        (Upstream::from_service("catalog", settings, service, &metrics), gate, calls, metrics)
    }

    fn as_user(user: &str) -> Ctx {
        Ctx::detached(Duration::from_secs(5), 4).on_behalf_of(CallerHeaders::user(user, ["profile"]))
    }

    #[tokio::test]
    async fn fifty_identical_gets_make_one_call_and_two_users_are_never_merged() {
        let (up, gate, calls, metrics) = gated(true);
        let (ana, bo) = (as_user("ana"), as_user("bo"));
        let mut waiting = Vec::new();
        for _ in 0..50 {
            let (up, ctx) = (up.clone(), ana.clone());
            waiting.push(tokio::spawn(async move { up.get::<Value>("/products/1").send(&ctx).await }));
        }
        let (up_bo, ctx_bo) = (up.clone(), bo.clone());
        let other = tokio::spawn(async move { up_bo.get::<Value>("/products/1").send(&ctx_bo).await });
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // Let every spawned call reach the table before the answers come.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        for call in waiting {
            assert_eq!(call.await.unwrap().unwrap(), serde_json::json!({"user": "ana"}));
        }
        assert_eq!(other.await.unwrap().unwrap(), serde_json::json!({"user": "bo"}));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per user");
        let text = metrics.render();
        assert!(text.contains(r#"bff_upstream_coalesced_total{upstream="catalog"} 49"#), "{text}");
        // Once it landed, the next call is a new flight.
        up.get::<Value>("/products/1").send(&ana).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Other paths, and writes, are never merged.
        let (first, second) =
            futures::join!(up.get::<Value>("/products/1").send(&ana), up.get::<Value>("/products/2").send(&ana));
        first.unwrap();
        second.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let (first, second) = futures::join!(
            up.post::<Value>("/products").json(&1).send(&ana),
            up.post::<Value>("/products").json(&1).send(&ana)
        );
        first.unwrap();
        second.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn off_it_merges_nothing() {
        let (up, gate, calls, _) = gated(false);
        gate.add_permits(100);
        let ctx = as_user("ana");
        let (a, b) = futures::join!(up.get::<Value>("/p").send(&ctx), up.get::<Value>("/p").send(&ctx));
        a.unwrap();
        b.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_with_an_earlier_deadline_stops_waiting_at_it() {
        let (up, gate, _, _) = gated(true);
        let leader = as_user("ana");
        let (up_lead, lead_ctx) = (up.clone(), leader.clone());
        let lead = tokio::spawn(async move { up_lead.get::<Value>("/p").send(&lead_ctx).await });
        tokio::task::yield_now().await;
        let start = Instant::now();
        let hurried =
            Ctx::detached(Duration::from_millis(100), 4).on_behalf_of(CallerHeaders::user("ana", ["profile"]));
        let error = up.get::<Value>("/p").send(&hurried).await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        gate.add_permits(1);
        lead.await.unwrap().unwrap();
    }
}
