//! What a call carries through its upstream's stack: the HTTP request, its [`CallContext`], and
//! the marks outer layers leave for inner ones ([`Outgoing`]).
//!
//! Beside the request rather than in its `Extensions`: a first extension costs three allocations
//! (the map, its table, the boxed value), and a retry's copy of them three more, on every call.
//! Here the context and the marks are plain fields, copied by reference counts.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::{HeaderValue, Request};
use tokio::time::Instant;

use super::Body;
use super::journal::AttemptLog;
use crate::identity::CallerHeaders;
use crate::observe::trace_context::TraceContext;

/// What a call carries through the stack: set by the call, read by the layers that need it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The request id, sent as `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The request deadline; no call outlives it.
    pub deadline: Instant,
    /// Whether the caller reads the body as a stream (else the client reads it whole).
    pub streamed: bool,
    /// The verified caller's identity headers; none for a call on no one's behalf.
    pub caller: Option<CallerHeaders>,
    /// The span the call's attempts are children of in the request's trace, when not the
    /// request's own: a fan-out part's.
    pub(crate) parent_span: Option<u64>,
    /// Where the request lists its attempts (its access log line) and keeps its trace; none
    /// outside a request.
    pub(crate) attempts: Option<Arc<dyn AttemptLog>>,
}

impl CallContext {
    /// The request's trace, which each attempt sends with a span id of its own, and the span the
    /// attempts are children of. None for a call outside any request (a JWKS fetch), which
    /// sends none. Read from the request, not copied into each call.
    pub(crate) fn trace(&self) -> Option<(&TraceContext, u64)> {
        let trace = self.attempts.as_deref()?.trace()?;
        Some((trace, self.parent_span.unwrap_or(trace.span_id)))
    }
}

/// A call on its way through the stack, down to the attempt's own layers and the HTTP client,
/// which get [`Outgoing::into_request`].
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) request: Request<Body>,
    pub(crate) context: CallContext,
    /// Set on a resend of the call (a retry, a hedge, an HTTP/2 resend): how many were sent
    /// before it, and why this one is.
    pub(crate) resent: Option<Resent>,
    /// Whether the breaker lets the call through as a probe (half-open).
    pub(crate) probe: bool,
    /// Whether the call revalidates a stale cached answer (`If-None-Match`).
    pub(crate) revalidation: bool,
    /// The instances the call and its copies went to; only where a retry or a hedge should go to
    /// another instance.
    pub(crate) tried: Option<Tried>,
    /// When this attempt started, set by the journal: what the attempt's time bound counts from
    /// (`upstream/timeout.rs`), so that the two read the clock once. A copy starts unset.
    pub(crate) started: Option<Instant>,
}

/// Why a call is sent again, and how many were sent before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resent {
    pub(crate) count: u8,
    pub(crate) reason: &'static str,
}

/// The instances a call (and its copies: retries, hedges) was sent to, by index, shared by the
/// copies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tried(pub(crate) Arc<AtomicU64>);

/// A request extension on a call whose response body the caller reads as it arrives: the
/// client then hands it over unread. Only such calls (proxied ones) carry an extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadAsStream;

impl Outgoing {
    pub(crate) fn new(request: Request<Body>, context: CallContext) -> Self {
        Self { request, context, resent: None, probe: false, revalidation: false, tried: None, started: None }
    }

    /// Marks this as the next resend of its call, for `reason`.
    pub(crate) fn resend(&mut self, reason: &'static str) {
        let count = self.resent.map_or(0, |r| r.count).saturating_add(1);
        self.resent = Some(Resent { count, reason });
    }

    /// A copy for another attempt; `None` when the request body is a stream.
    ///
    /// A call's own headers are most often none (the stack sets its own on each attempt): the
    /// copy then gets a new map, which allocates only if the copy is ever sent.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        let request = &self.request;
        let mut copy = Request::new(request.body().try_clone()?);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        if !request.headers().is_empty() {
            *copy.headers_mut() = request.headers().clone();
        }
        Some(Self {
            request: copy,
            context: self.context.clone(),
            resent: self.resent,
            probe: self.probe,
            revalidation: self.revalidation,
            tried: self.tried.clone(),
            started: None,
        })
    }

    /// The HTTP request, for the attempt's own layers and the client: marked [`ReadAsStream`]
    /// when the call reads its answer as a stream.
    pub(crate) fn into_request(self) -> Request<Body> {
        let mut request = self.request;
        if self.context.streamed {
            request.extensions_mut().insert(ReadAsStream);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outgoing(body: Body) -> Outgoing {
        let context = CallContext {
            request_id: HeaderValue::from_static("r-1"),
            deadline: Instant::now() + Duration::from_secs(1),
            streamed: false,
            caller: None,
            parent_span: None,
            attempts: None,
        };
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::PUT;
        *request.uri_mut() = http::Uri::from_static("/items/7?x=1");
        Outgoing::new(request, context)
    }

    /// A copy is the same call (method, path, headers, body, context, marks); a stream has none.
    #[test]
    fn a_copy_is_the_same_call_and_a_stream_has_none() {
        let mut original = outgoing(Body::from("{\"a\":1}"));
        original.request.headers_mut().insert("if-match", HeaderValue::from_static("\"v1\""));
        original.resend("retry");
        original.tried = Some(Tried::default());
        let copy = original.try_clone().expect("a buffered body is copied");
        assert_eq!(copy.request.method(), http::Method::PUT);
        assert_eq!(copy.request.uri(), "/items/7?x=1");
        assert_eq!(copy.request.headers(), original.request.headers());
        assert_eq!(copy.context.request_id, "r-1");
        assert_eq!(copy.resent.map(|r| (r.count, r.reason)), Some((1, "retry")));
        let shared = |o: &Outgoing| o.tried.as_ref().map(|t| Arc::as_ptr(&t.0));
        assert_eq!(shared(&copy), shared(&original), "copies share the instances tried");
        assert_eq!(copy.request.into_body().into_buffered().as_deref(), Some(&b"{\"a\":1}"[..]));

        let stream = Body::stream(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
        assert!(outgoing(stream).try_clone().is_none());
    }

    /// Only a call that reads its answer as a stream reaches the client with an extension.
    #[test]
    fn only_a_streamed_call_is_marked_for_the_client() {
        let request = outgoing(Body::empty()).into_request();
        assert!(request.extensions().is_empty());
        let mut streamed = outgoing(Body::empty());
        streamed.context.streamed = true;
        assert!(streamed.into_request().extensions().get::<ReadAsStream>().is_some());
    }

    /// Resends count up, each with its own reason.
    #[test]
    fn resends_count_up() {
        let mut call = outgoing(Body::empty());
        call.resend("retry");
        call.resend("hedge");
        assert_eq!(call.resent.map(|r| (r.count, r.reason)), Some((2, "hedge")));
    }
}
