//! Each upstream attempt: sent in the request's trace with a span of its own (`traceparent` with
//! a new span id, and the request's `tracestate`), and recorded when its response head (or its
//! failure) arrives: in the request's access log line, as `users:200:3,orders:500:12,orders:200:4`
//! (upstream, status or why there was none — `timeout`, `connect`, `error` —, ms to the head), in
//! `bff_upstream_attempt_duration_seconds{upstream, outcome}` (`2xx`, `3xx`, `4xx`, `5xx`, or
//! the failure), and, when the trace is sampled and spans are exported, as a client span with
//! why it was sent again (a retry, a hedge, an HTTP/2 resend:
//! [`Resent`](super::outgoing::Resent)), the breaker's state and whether it revalidates a cached
//! answer.
//!
//! A call answered or refused with no attempt is recorded the same way by the layer that decided
//! ([`JournalLayer::short`]): `cache_hit`, `cache_stale`, `circuit_open`, `shed`.
//!
//! Bounded: the first [`MAX_ATTEMPTS`] are kept and the rest counted (`+N more`), whatever a
//! fan-out sends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::Response;
use metrics::Histogram;
use pin_project_lite::pin_project;
use smallvec::SmallVec;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::headers::set_call_headers;
use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::observe::export::SpanSink;
use crate::observe::inline::Inline;
use crate::observe::metrics::Metrics;
use crate::observe::openmetrics::{Exemplars, Sampled};
use crate::observe::spans::{self, Attempted, Outcome};
use crate::observe::trace_context::{TRACEPARENT, TRACESTATE, TraceContext, nonzero_u64};

/// The most attempts one request's log line lists.
pub(crate) const MAX_ATTEMPTS: usize = 16;

/// Where a request keeps its attempts: the request context (`RequestMeta`), reached by its calls
/// through their [`CallContext`](super::CallContext) without an allocation of its own.
pub(crate) trait AttemptLog: Send + Sync + fmt::Debug {
    fn attempts(&self) -> &Attempts;

    /// Where the attempts' spans go, and the request's trace: only when it is sampled and spans
    /// are exported.
    fn exported(&self) -> Option<(&SpanSink, &TraceContext)>;

    /// The request's trace, which its calls propagate, exported or not.
    fn trace(&self) -> Option<&TraceContext>;
}

/// One request's attempts.
#[derive(Debug, Default)]
pub(crate) struct Attempts(Mutex<Listed>);

#[derive(Debug, Default)]
struct Listed {
    /// A screen's few calls fit in place: a request's list allocates only past them.
    attempts: SmallVec<[Attempt; 4]>,
    more: usize,
}

#[derive(Debug)]
struct Attempt {
    upstream: Arc<str>,
    outcome: Outcome,
    ms: u64,
}

/// A call answered or refused without an attempt, by the layer that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    /// Answered from the cache, fresh.
    CacheHit,
    /// Answered from the cache, stale, because the upstream failed.
    CacheStale,
    /// Refused: the circuit is open.
    CircuitOpen,
    /// Refused: the upstream's bulkhead is full.
    Shed,
}

impl Short {
    fn outcome(self) -> Outcome {
        match self {
            Self::CacheHit => Outcome::Cache("hit"),
            Self::CacheStale => Outcome::Cache("stale"),
            Self::CircuitOpen => Outcome::Failed("circuit_open"),
            Self::Shed => Outcome::Failed("shed"),
        }
    }

    /// Its `outcome` label (and the log line's word).
    fn label(self) -> &'static str {
        match self {
            Self::CacheHit => "cache_hit",
            Self::CacheStale => "cache_stale",
            Self::CircuitOpen => "circuit_open",
            Self::Shed => "shed",
        }
    }
}

impl Attempts {
    fn record(&self, upstream: &Arc<str>, outcome: Outcome, ms: u64) {
        let mut listed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if listed.attempts.len() < MAX_ATTEMPTS {
            listed.attempts.push(Attempt { upstream: upstream.clone(), outcome, ms });
        } else {
            listed.more += 1;
        }
    }

    /// The list as the access line gives it (see [`fmt::Display`]), written in `inline` when it
    /// fits there (most lists do), else in `spilled`; `None` when no attempt was made. Handed to
    /// the line as text, it is escaped once, with no formatter between.
    pub(crate) fn text<'a, const N: usize>(
        &self,
        inline: &'a mut Inline<N>,
        spilled: &'a mut String,
    ) -> Option<&'a str> {
        let listed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if listed.attempts.is_empty() {
            return None;
        }
        match listed.write_to(inline) {
            Ok(()) => Some(inline.as_str()),
            Err(_) => {
                // Written whole here; the pieces that fit inline are left there, unused.
                let _ = listed.write_to(spilled);
                Some(spilled.as_str())
            }
        }
    }
}

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write_to(f)
    }
}

impl Listed {
    /// `users:200:3,orders:timeout:250`, then `,+N more` past the first [`MAX_ATTEMPTS`].
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        // Written piece by piece: `write!` with its arguments costs several times more per line.
        let mut number = itoa::Buffer::new();
        for (i, attempt) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.write_str(",")?;
            }
            out.write_str(&attempt.upstream)?;
            out.write_str(":")?;
            match attempt.outcome {
                Outcome::Status(status) => out.write_str(number.format(status))?,
                Outcome::Failed(why) => out.write_str(why)?,
                Outcome::Cache(how) => {
                    out.write_str("cache_")?;
                    out.write_str(how)?;
                }
            }
            out.write_str(":")?;
            out.write_str(number.format(attempt.ms))?;
        }
        if self.more > 0 {
            write!(out, ",+{} more", self.more)?;
        }
        Ok(())
    }
}

/// Records each attempt of an upstream's calls in its request's [`Attempts`] and the attempt
/// histogram. One `Arc`: each call's clone of the stack clones it.
#[derive(Debug, Clone)]
pub(crate) struct JournalLayer(Arc<Journaling>);

#[derive(Debug)]
pub(crate) struct Journaling {
    upstream: Arc<str>,
    durations: Arc<Durations>,
    /// The instance's host and port, for its spans.
    instance: Option<(Arc<str>, u16)>,
    /// Whether the upstream has a breaker (its state is in the spans).
    breaker: bool,
}

impl std::ops::Deref for JournalLayer {
    type Target = Journaling;

    fn deref(&self) -> &Journaling {
        &self.0
    }
}

/// An upstream's attempt histograms, by outcome, registered once, and their exemplars.
struct Durations([(Histogram, Arc<Exemplars>); OUTCOMES.len()]);

impl Durations {
    /// Records an attempt of `outcome` (an index of [`OUTCOMES`]), and its exemplar when its
    /// trace is sampled.
    fn record(&self, outcome: usize, seconds: f64, sampled: Option<Sampled>) {
        let Some((histogram, exemplars)) = self.0.get(outcome) else { return };
        histogram.record(seconds);
        if let Some(sample) = sampled {
            exemplars.record(seconds, sample);
        }
    }
}

impl fmt::Debug for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Durations")
    }
}

/// The `outcome` labels of the attempt histogram.
const OUTCOMES: [&str; 12] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "connect",
    "error",
    "cache_hit",
    "cache_stale",
    "circuit_open",
    "shed",
];

impl JournalLayer {
    /// The journal of `upstream`; `breaker` says whether it has one.
    pub(crate) fn new(upstream: &Arc<str>, registry: &Metrics, breaker: bool) -> Self {
        let durations = OUTCOMES.map(|outcome| {
            let labels = [("upstream", upstream.to_string()), ("outcome", outcome.to_owned())];
            let name = "bff_upstream_attempt_duration_seconds";
            (registry.histogram(name, &labels), registry.exemplars(name, &labels))
        });
        let durations = Arc::new(Durations(durations));
        Self(Arc::new(Journaling { upstream: upstream.clone(), durations, instance: None, breaker }))
    }

    /// Records `call`, which the cache answered, or the breaker or the bulkhead refused, with no
    /// attempt: in the histogram (as taking no time), the request's attempts and its trace.
    pub(crate) fn short(&self, call: &Outgoing, short: Short) {
        let label = OUTCOMES.iter().position(|o| *o == short.label()).unwrap_or(OUTCOMES.len() - 1);
        let context = &call.context;
        let trace = context.trace();
        let sampled = trace.filter(|(trace, _)| trace.sampled);
        let sample = sampled.map(|(trace, parent)| Sampled {
            trace_id: trace.trace_id,
            span_id: parent,
            at: std::time::Instant::now(),
        });
        self.durations.record(label, 0.0, sample);
        let Some(log) = &context.attempts else { return };
        log.attempts().record(&self.upstream, short.outcome(), 0);
        let (Some((_, parent)), Some((sink, exported))) = (trace, log.exported()) else { return };
        let attempted = Attempted {
            upstream: &self.upstream,
            instance: None,
            method: call.request.method(),
            path: call.request.uri().path(),
            outcome: short.outcome(),
            started: SystemTime::now(),
            parent,
            resent: call.resent.map(|r| (r.count, r.reason)),
            circuit: self.circuit(call, short == Short::CircuitOpen),
            revalidation: false,
            bytes: None,
        };
        spans::attempt(sink, exported, nonzero_u64(), &attempted);
    }

    /// The breaker's state as `call` met it.
    fn circuit(&self, call: &Outgoing, open: bool) -> Option<&'static str> {
        if open {
            return Some("open");
        }
        self.breaker.then_some(if call.probe { "half_open" } else { "closed" })
    }

    /// The layer for the instance at `url`.
    pub(crate) fn instance(&self, url: &str) -> Self {
        let parsed = url::Url::parse(url).ok();
        let instance = parsed.and_then(|u| Some((Arc::from(u.host_str()?), u.port_or_known_default()?)));
        let (upstream, durations, breaker) = (self.upstream.clone(), self.durations.clone(), self.breaker);
        Self(Arc::new(Journaling { upstream, durations, instance, breaker }))
    }
}

impl<S> Layer<S> for JournalLayer {
    type Service = Journal<S>;

    fn layer(&self, inner: S) -> Journal<S> {
        Journal { inner, layer: self.clone() }
    }
}

/// The service of [`JournalLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Journal<S> {
    inner: S,
    layer: JournalLayer,
}

impl<S> Service<Outgoing> for Journal<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Journaled<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Outgoing) -> Self::Future {
        // The headers every attempt carries first, then its trace's. A call's own headers are
        // most often none (a proxied call's are the client's): then it has no trace header of
        // its own to remove, and each removal would hash its name for nothing.
        let own = !call.request.headers().is_empty();
        // The attempt's start: what its deadline header and its time bound count from, and its
        // duration.
        let now = Instant::now();
        call.started = Some(now);
        set_call_headers(&mut call, now);
        let attempts = call.context.attempts.clone();
        // The attempt's own span in the request's trace; none outside a request (a JWKS fetch).
        let trace = call.context.trace().map(|(trace, parent)| {
            let (span_id, traceparent) = trace.attempt();
            (span_id, traceparent, trace.state.clone(), parent, trace.sampled.then_some(trace.trace_id))
        });
        // An exemplar of its duration, when the trace is sampled.
        let sampled = trace.as_ref().and_then(|(span_id, .., trace_id)| Some(((*trace_id)?, *span_id)));
        let headers = call.request.headers_mut();
        let span = match trace {
            Some((span_id, traceparent, state, parent, _)) => {
                headers.insert(TRACEPARENT, traceparent);
                match state {
                    Some(state) => {
                        headers.insert(TRACESTATE, state);
                    }
                    None if own => {
                        headers.remove(TRACESTATE);
                    }
                    None => {}
                }
                let exported = attempts.as_deref().and_then(AttemptLog::exported).is_some();
                exported.then(|| {
                    Box::new(Started {
                        span_id,
                        parent,
                        method: call.request.method().clone(),
                        path: Box::from(call.request.uri().path()),
                        at: SystemTime::now(),
                        resent: call.resent.map(|r| (r.count, r.reason)),
                        circuit: self.layer.circuit(&call, false),
                        revalidation: call.revalidation,
                    })
                })
            }
            None => {
                if own {
                    headers.remove(TRACEPARENT);
                    headers.remove(TRACESTATE);
                }
                None
            }
        };
        let entry = Entry { attempts, layer: self.layer.clone(), span, sampled };
        Journaled { inner: self.inner.call(call), entry: Some((entry, now)) }
    }
}

pin_project! {
    /// An attempt, recorded when its response head (or its failure) arrives.
    pub(crate) struct Journaled<F> {
        #[pin]
        inner: F,
        entry: Option<(Entry, Instant)>,
    }
}

/// Where an attempt is recorded.
struct Entry {
    attempts: Option<Arc<dyn AttemptLog>>,
    layer: JournalLayer,
    /// The attempt's span, when it is exported (boxed: most attempts export none).
    span: Option<Box<Started>>,
    /// Its trace and span, when the trace is sampled: an exemplar of its duration.
    sampled: Option<(u128, u64)>,
}

/// An exported attempt span, begun.
struct Started {
    span_id: u64,
    /// The span of the part (or the request) the attempt belongs to.
    parent: u64,
    method: http::Method,
    path: Box<str>,
    at: SystemTime,
    resent: Option<(u8, &'static str)>,
    circuit: Option<&'static str>,
    revalidation: bool,
}

impl Entry {
    fn export(&self, log: &dyn AttemptLog, outcome: Outcome, bytes: Option<u64>) {
        let (Some(started), Some((sink, trace))) = (&self.span, log.exported()) else { return };
        let attempted = Attempted {
            upstream: &self.layer.upstream,
            instance: self.layer.instance.as_ref().map(|(host, port)| (&**host, *port)),
            method: &started.method,
            path: &started.path,
            outcome,
            started: started.at,
            parent: started.parent,
            resent: started.resent,
            circuit: started.circuit,
            revalidation: started.revalidation,
            bytes,
        };
        spans::attempt(sink, trace, started.span_id, &attempted);
    }
}

impl<F> Future for Journaled<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some((entry, start)) = this.entry.take() {
            let (outcome, label) = match &result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (Outcome::Status(status), usize::from(status / 100).clamp(1, 5) - 1)
                }
                Err(error) => {
                    let why = failure(error);
                    (Outcome::Failed(why), OUTCOMES.iter().position(|o| *o == why).unwrap_or(OUTCOMES.len() - 1))
                }
            };
            let elapsed = start.elapsed();
            let at = (start + elapsed).into_std();
            let sample = entry.sampled.map(|(trace_id, span_id)| Sampled { trace_id, span_id, at });
            entry.layer.durations.record(label, elapsed.as_secs_f64(), sample);
            if let Some(attempts) = &entry.attempts {
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                attempts.attempts().record(&entry.layer.upstream, outcome, ms);
                if entry.span.is_some() {
                    entry.export(&**attempts, outcome, result.as_ref().ok().and_then(body_size));
                }
            }
        }
        Poll::Ready(result)
    }
}

/// The size of a response's body, when known: read whole, or declared by `Content-Length`.
fn body_size(response: &Response<Body>) -> Option<u64> {
    use http_body::Body as _;
    response.body().size_hint().exact().or_else(|| {
        let length = response.headers().get(http::header::CONTENT_LENGTH)?;
        length.to_str().ok()?.parse().ok()
    })
}

/// Why an attempt had no answer: `timeout`, `connect`, else `error` (in the log line, a broken
/// exchange is told apart as `transport`).
fn failure(error: &BoxError) -> &'static str {
    match error.downcast_ref::<UpstreamError>().map(UpstreamError::kind) {
        Some(UpstreamErrorKind::Timeout(_)) => "timeout",
        Some(UpstreamErrorKind::Connect) => "connect",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_listed_in_order_and_bounded() {
        let attempts = Attempts::default();
        let text =
            |attempts: &Attempts| attempts.text(&mut Inline::<256>::new(), &mut String::new()).map(str::to_owned);
        assert_eq!(text(&attempts), None, "no attempt, no field");
        let (users, orders): (Arc<str>, Arc<str>) = (Arc::from("users"), Arc::from("orders"));
        attempts.record(&users, Outcome::Status(200), 3);
        attempts.record(&orders, Outcome::Failed("timeout"), 250);
        attempts.record(&orders, Outcome::Status(200), 4);
        assert_eq!(attempts.to_string(), "users:200:3,orders:timeout:250,orders:200:4");
        assert_eq!(text(&attempts).as_deref(), Some("users:200:3,orders:timeout:250,orders:200:4"));
        let shorts = Attempts::default();
        shorts.record(&users, Short::CacheHit.outcome(), 0);
        shorts.record(&orders, Short::CircuitOpen.outcome(), 0);
        assert_eq!(shorts.to_string(), "users:cache_hit:0,orders:circuit_open:0");
        for _ in 0..20 {
            attempts.record(&users, Outcome::Status(200), 1);
        }
        let line = attempts.to_string();
        assert_eq!(line.split(',').count(), MAX_ATTEMPTS + 1, "{line}");
        assert!(line.ends_with(",+7 more"), "{line}");
        // Past what is handed on in one piece, the list is written whole all the same.
        let long = Attempts::default();
        let name: Arc<str> = Arc::from("a-very-long-upstream-name-ü");
        for ms in 0..20 {
            long.record(&name, Outcome::Status(503), ms);
        }
        let expected: Vec<String> = (0..MAX_ATTEMPTS).map(|ms| format!("{name}:503:{ms}")).collect();
        assert_eq!(long.to_string(), format!("{},+4 more", expected.join(",")));
        assert!(long.to_string().len() > 256);
        assert_eq!(text(&long), Some(long.to_string()), "spilled whole, not cut where it stopped fitting");
    }

    /// Each attempt carries the trace headers of the request's trace, never those the call came
    /// with (a proxied call's are the client's), and none outside a request.
    #[tokio::test]
    async fn an_attempt_carries_its_requests_trace_headers_not_the_calls_own() {
        use http::HeaderValue;

        use super::super::outgoing::CallContext;

        /// A request's attempts and trace, its spans not exported.
        #[derive(Debug)]
        struct Traced(Attempts, TraceContext);

        impl AttemptLog for Traced {
            fn attempts(&self) -> &Attempts {
                &self.0
            }

            fn exported(&self) -> Option<(&SpanSink, &TraceContext)> {
                None
            }

            fn trace(&self) -> Option<&TraceContext> {
                Some(&self.1)
            }
        }

        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        let client = tower::service_fn(move |call: Outgoing| {
            seen.lock().unwrap().push(call.request.headers().clone());
            async { Ok::<_, BoxError>(Response::new(Body::empty())) }
        });
        let mut journal =
            JournalLayer::new(&Arc::from("users"), &Metrics::new(), false).instance("http://127.0.0.1:9").layer(client);
        let trace = TraceContext { trace_id: 7, span_id: 9, parent: None, sampled: false, state: None };
        let with_state = TraceContext { state: Some(HeaderValue::from_static("ours=1")), ..trace.clone() };
        for (trace, own) in [(None, true), (Some(trace), true), (Some(with_state), true), (None, false)] {
            let attempts = trace.map(|trace| Arc::new(Traced(Attempts::default(), trace)) as Arc<dyn AttemptLog>);
            let context = CallContext {
                request_id: HeaderValue::from_static("r-1"),
                deadline: Instant::now() + std::time::Duration::from_secs(1),
                streamed: false,
                caller: None,
                parent_span: None,
                attempts,
            };
            let mut request = http::Request::new(Body::empty());
            if own {
                request.headers_mut().insert(TRACEPARENT, HeaderValue::from_static("00-theirs-01"));
                request.headers_mut().insert(TRACESTATE, HeaderValue::from_static("theirs=1"));
            }
            journal.call(Outgoing::new(request, context)).await.unwrap();
        }
        let sent = sent.lock().unwrap();
        let header = |i: usize, name| sent[i].get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned());
        assert_eq!((header(0, TRACEPARENT), header(0, TRACESTATE)), (None, None));
        assert!(header(1, TRACEPARENT).is_some_and(|v| v.starts_with("00-00000000000000000000000000000007-")));
        assert_eq!(header(1, TRACESTATE), None);
        assert_eq!(header(2, TRACESTATE).as_deref(), Some("ours=1"));
        assert_eq!((header(3, TRACEPARENT), header(3, TRACESTATE)), (None, None));
        let request_id = http::HeaderName::from_static("x-request-id");
        assert_eq!(header(3, request_id).as_deref(), Some("r-1"), "the call's headers are set too");
    }
}
