//! Several identical instances of one upstream (`url = [...]`): each call goes to the one with
//! fewer calls in flight of two picked at random (power of two choices), a retry to one not yet
//! tried, and an instance that keeps failing is ejected for a while (outlier detection).
//!
//! - **Ejection**: after `consecutive_failures` failures in a row (a failure as the breaker
//!   counts it: no connection, no answer in time, a broken exchange, a 5xx) an instance is out of
//!   the rotation for `base_ejection`; the n-th ejection without a quiet `max_ejection` between
//!   them lasts n times that, up to `max_ejection`. Back in, its first call is a probe: a failure
//!   ejects it again at once. At most `max_ejection_percent` of the instances are out at once
//!   (at least one, if the percentage allows any), and never all of them.
//! - **Another instance for a retry**: calls whose retries or hedges may send them again carry a
//!   [`Tried`] set, shared by their copies; the pick leaves out the instances in it while others
//!   are left.
//!
//! tower's `balance::p2c::Balance` picks the same way, but it is not `Clone`: sharing it between
//! calls takes a `Buffer`, a task and a channel hop per call. The pick here is a few atomics on
//! a shared list, and with one instance the layer is a pass-through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use http::Response;
use metrics::{Counter, Gauge};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;
use tower::util::Oneshot;

use super::breaker::is_failure;
use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::config::{MAX_INSTANCES, OutlierConfig};
use crate::observe::metrics::Metrics;

/// One upstream's instances; see [the module docs](self).
#[derive(Clone)]
pub(crate) enum Balance<S> {
    /// One instance: calls go straight to it.
    One(S),
    /// Several.
    Many(Arc<Instances<S>>),
    /// None (an upstream built by hand from an empty list): every call fails, naming it.
    Empty(Arc<str>),
}

pub(crate) struct Instances<S> {
    name: Arc<str>,
    list: Box<[Instance<S>]>,
    outlier: OutlierConfig,
    /// The most instances out at once.
    max_ejected: usize,
    ejected: AtomicUsize,
    rng: AtomicU64,
    ejections: Counter,
    ejected_gauge: Gauge,
}

struct Instance<S> {
    service: S,
    url: String,
    in_flight: AtomicUsize,
    /// Whether it is ejected now (read on every pick; the lock is only taken for ejected ones).
    out: AtomicBool,
    /// Whether its last outcome succeeded and it is not on probation: a success then changes
    /// nothing, and is recorded without the lock.
    clean: AtomicBool,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    in_a_row: u32,
    /// Ejections since it last stayed in for `max_ejection`.
    times: u32,
    until: Option<Instant>,
    returned: Option<Instant>,
    /// Back from an ejection, not yet proven: one failure ejects it again.
    probation: bool,
}

impl<S> Balance<S> {
    /// Balances over `instances` (URL, service), in order; one instance is a pass-through.
    pub(crate) fn new(
        name: &Arc<str>,
        outlier: &OutlierConfig,
        instances: Vec<(String, S)>,
        registry: &Metrics,
    ) -> Self {
        let mut instances = instances;
        // Sets of instances are bits of a `u64` (config allows no more; code that builds an
        // upstream by hand gets the first 64).
        if instances.len() > MAX_INSTANCES {
            tracing::warn!(upstream = %name, given = instances.len(), kept = MAX_INSTANCES, "too many instances");
            instances.truncate(MAX_INSTANCES);
        }
        if instances.is_empty() {
            return Self::Empty(name.clone());
        }
        if instances.len() == 1
            && let Some((_, one)) = instances.pop()
        {
            return Self::One(one);
        }
        let count = instances.len();
        let allowed = count * outlier.max_ejection_percent as usize / 100;
        let max_ejected = if outlier.max_ejection_percent == 0 { 0 } else { allowed.max(1).min(count - 1) };
        let label = [("upstream", name.to_string())];
        let list = instances
            .into_iter()
            .map(|(url, service)| Instance {
                service,
                url,
                in_flight: AtomicUsize::new(0),
                out: AtomicBool::new(false),
                clean: AtomicBool::new(true),
                health: Mutex::new(Health::default()),
            })
            .collect();
        Self::Many(Arc::new(Instances {
            name: name.clone(),
            list,
            outlier: outlier.clone(),
            max_ejected,
            ejected: AtomicUsize::new(0),
            rng: AtomicU64::new(u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15),
            ejections: registry.counter("bff_upstream_ejections_total", &label),
            ejected_gauge: registry.gauge("bff_upstream_instances_ejected", &label),
        }))
    }
}

impl<S> Instances<S> {
    /// A random number (splitmix64 over a shared counter).
    fn random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The instances in the rotation now, as a bit set; an ejection that has run out ends here.
    fn in_rotation(&self) -> u64 {
        let mut set = 0;
        for (index, instance) in self.list.iter().enumerate() {
            if instance.out.load(Ordering::Relaxed) && !self.return_if_due(instance) {
                continue;
            }
            set |= 1 << index;
        }
        set
    }

    /// Brings `instance` back when its ejection has run out; whether it is in.
    fn return_if_due(&self, instance: &Instance<S>) -> bool {
        let mut health = instance.health.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match health.until {
            Some(until) if now >= until => {
                health.until = None;
                health.returned = Some(now);
                health.probation = true;
                health.in_a_row = 0;
                instance.clean.store(false, Ordering::Relaxed);
                instance.out.store(false, Ordering::Relaxed);
                let left = self.ejected.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                self.ejected_gauge.set(left as f64);
                tracing::info!(upstream = %self.name, instance = %instance.url, "instance back in the rotation");
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Power of two choices among the instances in rotation and not yet tried (all of those
    /// in rotation when every one was tried).
    fn pick(&self, tried: u64) -> usize {
        let in_rotation = self.in_rotation();
        let mut candidates = in_rotation & !tried;
        if candidates == 0 {
            candidates = in_rotation;
        }
        if candidates == 0 {
            // Never reached (one instance always stays in); any is better than none.
            candidates = u64::MAX >> (64 - self.list.len());
        }
        let count = candidates.count_ones() as u64;
        let random = self.random();
        let first = nth_set_bit(candidates, random % count);
        if count == 1 {
            return first;
        }
        let second = nth_set_bit(candidates & !(1 << first), (random >> 32) % (count - 1));
        let load = |i: usize| self.list[i].in_flight.load(Ordering::Relaxed);
        if load(second) < load(first) { second } else { first }
    }

    /// Records one outcome of instance `index`, ejecting it when that is due.
    fn record(&self, index: usize, failed: bool) {
        let instance = &self.list[index];
        if !failed && instance.clean.load(Ordering::Relaxed) {
            return;
        }
        let mut health = instance.health.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            health.in_a_row = 0;
            health.probation = false;
            instance.clean.store(true, Ordering::Relaxed);
            return;
        }
        instance.clean.store(false, Ordering::Relaxed);
        health.in_a_row += 1;
        let threshold = self.outlier.consecutive_failures;
        let due = health.probation || (threshold > 0 && health.in_a_row >= threshold);
        if !due || health.until.is_some() {
            return;
        }
        // Take a place among the ejected, if one is free.
        let free = self
            .ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.max_ejected).then_some(n + 1))
            .is_ok();
        if !free {
            return;
        }
        let now = Instant::now();
        if health.returned.is_some_and(|back| now.saturating_duration_since(back) >= self.outlier.max_ejection) {
            health.times = 0;
        }
        health.times += 1;
        let length = self.outlier.base_ejection.saturating_mul(health.times).min(self.outlier.max_ejection);
        health.until = Some(now + length);
        health.probation = false;
        instance.out.store(true, Ordering::Relaxed);
        self.ejections.increment(1);
        self.ejected_gauge.set(self.ejected.load(Ordering::Relaxed) as f64);
        tracing::warn!(
            upstream = %self.name,
            instance = %instance.url,
            failures_in_a_row = health.in_a_row,
            for_ = ?length,
            "instance ejected"
        );
    }
}

/// The index of the `n`-th set bit of `set` (which has more than `n`).
fn nth_set_bit(mut set: u64, n: u64) -> usize {
    for _ in 0..n {
        set &= set - 1;
    }
    set.trailing_zeros() as usize
}

impl<S> Service<Outgoing> for Balance<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError> + Clone,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Balanced<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::One(service) => service.poll_ready(cx),
            // Each call readies its own instance's clone.
            Self::Many(_) | Self::Empty(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Outgoing) -> Balanced<S> {
        match self {
            Self::One(service) => Balanced::One { future: service.call(request) },
            Self::Many(instances) => {
                let tried = request.tried.as_ref();
                let index = instances.pick(tried.map_or(0, |t| t.0.load(Ordering::Relaxed)));
                if let Some(tried) = tried {
                    tried.0.fetch_or(1 << index, Ordering::Relaxed);
                }
                let instance = &instances.list[index];
                instance.in_flight.fetch_add(1, Ordering::Relaxed);
                let future = Oneshot::new(instance.service.clone(), request);
                Balanced::Many { future, slot: Slot { instances: instances.clone(), index } }
            }
            Self::Empty(name) => {
                let error = UpstreamError::new(name.clone(), UpstreamErrorKind::Connect).with_cause("no instances");
                Balanced::Empty { error: Some(error) }
            }
        }
    }
}

/// A call's place on its instance: counted in flight until it ends or is dropped.
pub(crate) struct Slot<S> {
    instances: Arc<Instances<S>>,
    index: usize,
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        self.instances.list[self.index].in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A call through [`Balance`].
    #[project = BalancedProj]
    pub(crate) enum Balanced<S: Service<Outgoing>> {
        One { #[pin] future: S::Future },
        Many { #[pin] future: Oneshot<S, Outgoing>, slot: Slot<S> },
        Empty { error: Option<UpstreamError> },
    }
}

impl<S> Future for Balanced<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BalancedProj::One { future } => future.poll(cx),
            BalancedProj::Many { future, slot } => {
                let result = ready!(future.poll(cx));
                slot.instances.record(slot.index, is_failure(&result));
                Poll::Ready(result)
            }
            BalancedProj::Empty { error } => {
                Poll::Ready(Err(error.take().map_or_else(|| "a refused call polled again".into(), Into::into)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use http::{HeaderValue, Request, StatusCode};
    use serde_json::Value;

    use super::super::{Upstream, UpstreamSettings};
    use super::*;
    use crate::config::RetryConfig;

    /// Three instances; `bad` answers 500 while its flag is set. Counts calls per instance.
    fn three(bad: usize, retry: RetryConfig) -> (Upstream, Arc<AtomicBool>, Arc<[AtomicUsize; 3]>, Metrics) {
        let failing = Arc::new(AtomicBool::new(true));
        let calls: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let instances = (0..3)
            .map(|i| {
                let (failing, calls) = (failing.clone(), calls.clone());
                tower::service_fn(move |_: Request<Body>| {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                    let fail = i == bad && failing.load(Ordering::SeqCst);
                    async move {
                        let mut response = Response::new(Body::from("{}"));
                        if fail {
                            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, BoxError>(response)
                    }
                })
            })
            .collect();
        let settings = UpstreamSettings { retry, ..UpstreamSettings::bare() };
        let metrics = Metrics::new();
        (Upstream::from_services("catalog", settings, instances, &metrics), failing, calls, metrics)
    }

    async fn call(up: &Upstream) -> Result<Value, super::super::UpstreamError> {
        up.get::<Value>("/p").send_within(HeaderValue::from_static("r"), Instant::now() + Duration::from_secs(1)).await
    }

    /// How long the `times`-th ejection in a row lasts.
    fn ejection_for(outlier: &OutlierConfig, times: u32) -> Duration {
        outlier.base_ejection.saturating_mul(times).min(outlier.max_ejection)
    }

    fn counts(calls: &[AtomicUsize; 3]) -> [usize; 3] {
        [0, 1, 2].map(|i| calls[i].swap(0, Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_instance_is_ejected_and_retries_go_elsewhere() {
        let (up, failing, calls, metrics) = three(
            1,
            RetryConfig {
                attempts: 2,
                backoff_base: Duration::ZERO,
                backoff_max: Duration::ZERO,
                ..RetryConfig::default()
            },
        );
        // Calls keep succeeding: a 500 from the bad one is retried on another.
        for _ in 0..300 {
            call(&up).await.unwrap();
        }
        let [a, b, c] = counts(&calls);
        assert!(a > 50 && c > 50, "the good ones share the load: {a} {b} {c}");
        assert_eq!(b, 5, "five failures in a row eject it; then it gets nothing");
        // Still out until the ejection (10 s) ends, then back for one probe that fails: out
        // again, for twice as long.
        tokio::time::advance(ejection_for(&OutlierConfig::default(), 1) - Duration::from_millis(1)).await;
        for _ in 0..100 {
            call(&up).await.unwrap();
        }
        assert_eq!(counts(&calls)[1], 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..100 {
            call(&up).await.unwrap();
        }
        assert_eq!(counts(&calls)[1], 1, "one probe, then out again");
        tokio::time::advance(ejection_for(&OutlierConfig::default(), 2)).await;
        failing.store(false, Ordering::SeqCst);
        for _ in 0..300 {
            call(&up).await.unwrap();
        }
        assert!(counts(&calls)[1] > 50, "recovered, it is back in the rotation");
        let text = metrics.render();
        assert!(text.contains(r#"bff_upstream_ejections_total{upstream="catalog"} 2"#), "{text}");
        assert!(text.contains(r#"bff_upstream_instances_ejected{upstream="catalog"} 0"#), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn never_all_of_them_are_ejected() {
        let failing = Arc::new(AtomicUsize::new(0));
        let instances = (0..2)
            .map(|_| {
                let failing = failing.clone();
                tower::service_fn(move |_: Request<Body>| {
                    failing.fetch_add(1, Ordering::SeqCst);
                    async { Err::<Response<Body>, BoxError>("refused".into()) }
                })
            })
            .collect();
        let up = Upstream::from_services("users", UpstreamSettings::bare(), instances, &Metrics::new());
        for _ in 0..100 {
            assert!(call(&up).await.is_err());
        }
        assert_eq!(failing.load(Ordering::SeqCst), 100, "every call still reaches an instance");
    }

    /// Built by hand from no instances, every call fails as unreachable (no panic).
    #[tokio::test]
    async fn no_instances_fail_every_call() {
        type Answer = std::future::Ready<Result<Response<Body>, BoxError>>;
        type Fake = tower::util::ServiceFn<fn(Request<Body>) -> Answer>;
        let none: Vec<Fake> = Vec::new();
        let up = Upstream::from_services("nowhere", UpstreamSettings::bare(), none, &Metrics::new());
        assert_eq!(call(&up).await.unwrap_err().kind(), &super::super::UpstreamErrorKind::Connect);
    }

    /// Built by hand with more instances than a set can hold, it keeps the first 64 and works.
    #[tokio::test]
    async fn more_than_64_instances_are_cut_to_64() {
        let calls = Arc::new(AtomicUsize::new(0));
        let instances = (0..70)
            .map(|_| {
                let calls = calls.clone();
                tower::service_fn(move |_: Request<Body>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, BoxError>(Response::new(Body::from("{}"))) }
                })
            })
            .collect();
        let up = Upstream::from_services("wide", UpstreamSettings::bare(), instances, &Metrics::new());
        for _ in 0..200 {
            call(&up).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn the_less_busy_of_two_gets_the_call() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let calls: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        let instances = (0..2)
            .map(|i| {
                let (gate, calls) = (gate.clone(), calls.clone());
                tower::service_fn(move |_: Request<Body>| {
                    calls[i].fetch_add(1, Ordering::SeqCst);
                    let gate = gate.clone();
                    async move {
                        // The first instance holds its calls until the gate opens.
                        if i == 0 {
                            let _pass = gate.acquire().await;
                        }
                        Ok::<_, BoxError>(Response::new(Body::from("{}")))
                    }
                })
            })
            .collect();
        let up = Upstream::from_services("users", UpstreamSettings::bare(), instances, &Metrics::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut held = Vec::new();
        // Once one call is stuck on the first, every pick of two prefers the second.
        while calls[0].load(Ordering::SeqCst) == 0 {
            let call = up.get::<Value>("/u").send_within(HeaderValue::from_static("r"), deadline);
            held.push(tokio::spawn(call));
            tokio::task::yield_now().await;
        }
        let before = calls[1].load(Ordering::SeqCst);
        for _ in 0..50 {
            call(&up).await.unwrap();
        }
        assert_eq!(calls[1].load(Ordering::SeqCst), before + 50);
        gate.add_permits(held.len());
        for call in held {
            call.await.unwrap().unwrap();
        }
    }
}
