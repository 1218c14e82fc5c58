//! The `request` span around everything inside: the request id, the method, the path, and the
//! request's trace (W3C Trace Context, `observe/trace_context.rs`): its `trace_id` and this
//! request's `span_id`, so that every log line of the request names them. The request context is
//! made here too ([`context::begin`]): the trace ([`TraceContext`]) goes into it, and from there to
//! every upstream attempt, with the request's server span ([`ServerSpan`]) when the trace is
//! sampled and spans are exported. The request carries the context as an extension.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::context;
use crate::config::{AcceptParent, IpNet, TracingConfig};
use crate::identity::REQUEST_ID_HEADER;
use crate::limit::client_ip::client_ip;
use crate::observe::export::SpanSink;
use crate::observe::spans::ServerSpan;
use crate::observe::trace_context::TraceContext;
use crate::request::RoutePolicies;

/// Runs the rest of the stack in a `request` span, in the request's trace.
#[derive(Debug, Clone)]
pub(super) struct SpanLayer(Arc<Trust>);

/// Whose `traceparent` is continued, how many new traces are sampled, and the route policies
/// every request context starts from.
#[derive(Debug)]
struct Trust {
    accept: AcceptParent,
    trusted_proxies: Vec<IpNet>,
    sample_ratio: f64,
    spans: Option<SpanSink>,
    policies: RoutePolicies,
}

impl SpanLayer {
    pub(super) fn new(
        tracing: &TracingConfig,
        trusted_proxies: &[IpNet],
        spans: Option<SpanSink>,
        policies: RoutePolicies,
    ) -> Self {
        Self(Arc::new(Trust {
            accept: tracing.accept_parent,
            trusted_proxies: trusted_proxies.to_vec(),
            sample_ratio: tracing.sample_ratio,
            spans,
            policies,
        }))
    }
}

impl<S> Layer<S> for SpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan(inner, self.0.clone())
    }
}

/// The service of [`SpanLayer`].
#[derive(Debug, Clone)]
pub(super) struct RequestSpan<S>(S, Arc<Trust>);

impl Trust {
    /// Whether `request`'s `traceparent` may be continued.
    fn accepts(&self, request: &Request) -> bool {
        match self.accept {
            AcceptParent::Always => true,
            AcceptParent::Never => false,
            AcceptParent::TrustedProxies => {
                peer(request).is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(ip)))
            }
        }
    }

    /// The server span of a request in `trace`, when it is sampled and spans are exported.
    fn server_span(&self, trace: &TraceContext, request: &Request) -> Option<ServerSpan> {
        let sink = self.spans.as_ref().filter(|_| trace.sampled)?;
        let client = peer(request).map(|peer| client_ip(peer, request.headers(), &self.trusted_proxies));
        Some(ServerSpan::begin(sink.clone(), client))
    }
}

fn peer(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

impl<S> Service<Request> for RequestSpan<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let trace = TraceContext::of_request(request.headers(), self.1.accepts(&request), self.1.sample_ratio);
        // The request id layer outside keeps only ASCII ids (`request_id.rs`).
        let id = request.headers().get(&REQUEST_ID_HEADER).and_then(|id| std::str::from_utf8(id.as_bytes()).ok());
        let ids = trace.ids();
        let span = tracing::info_span!(
            "request",
            id = id.unwrap_or_default(),
            method = request.method().as_str(),
            path = request.uri().path(),
            trace_id = ids.trace_id(),
            span_id = ids.span_id(),
        );
        let server_span = self.1.server_span(&trace, &request);
        let meta = context::begin(&request, &self.1.policies, trace, server_span);
        request.extensions_mut().insert(meta);
        // Entered while the inner layers are called, then moved into their future (not cloned).
        let inner = {
            let _entered = span.enter();
            self.0.call(request)
        };
        inner.instrument(span)
    }
}
