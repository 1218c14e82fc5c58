//! The `request` span around everything inside: the request id, the method and the path.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::identity::REQUEST_ID_HEADER;

/// Runs the rest of the stack in a `request` span.
#[derive(Debug, Clone, Copy)]
pub(super) struct SpanLayer;

impl<S> Layer<S> for SpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan(inner)
    }
}

/// The service of [`SpanLayer`].
#[derive(Debug, Clone)]
pub(super) struct RequestSpan<S>(S);

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

    fn call(&mut self, request: Request) -> Self::Future {
        let id = request.headers().get(&REQUEST_ID_HEADER).map(|id| String::from_utf8_lossy(id.as_bytes()));
        let span = tracing::info_span!(
            "request",
            id = %id.unwrap_or_default(),
            method = %request.method(),
            path = %request.uri().path(),
        );
        let _entered = span.enter();
        self.0.call(request).instrument(span.clone())
    }
}
