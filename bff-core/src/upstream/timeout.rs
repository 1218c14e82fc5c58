//! Time bounds: the per-try timeout layer, and the future both it and the deadline use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};

/// Bounds each attempt (its body included, unless streamed) by the upstream's `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct PerTryTimeoutLayer {
    name: Arc<str>,
    timeout: Duration,
}

impl PerTryTimeoutLayer {
    pub(crate) fn new(name: Arc<str>, timeout: Duration) -> Self {
        Self { name, timeout }
    }
}

impl<S> Layer<S> for PerTryTimeoutLayer {
    type Service = PerTryTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerTryTimeout { inner, name: self.name.clone(), timeout: self.timeout }
    }
}

/// The service of [`PerTryTimeoutLayer`].
#[derive(Debug, Clone)]
pub(crate) struct PerTryTimeout<S> {
    inner: S,
    name: Arc<str>,
    timeout: Duration,
}

impl<S> Service<Request<Body>> for PerTryTimeout<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Bounded::new(self.inner.call(request), Instant::now() + self.timeout, self.timeout, self.name.clone())
    }
}

pin_project! {
    /// `inner`, failing as an upstream timeout of `budget` at `until`.
    pub(crate) struct Bounded<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        budget: Duration,
        name: Arc<str>,
    }
}

impl<F: std::future::Future> Bounded<F> {
    pub(crate) fn new(inner: F, until: Instant, budget: Duration, name: Arc<str>) -> Self {
        Self { inner: tokio::time::timeout_at(until, inner), budget, name }
    }
}

impl<F, R> Future for Bounded<F>
where
    F: Future<Output = Result<R, BoxError>>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(UpstreamError::new(this.name.clone(), UpstreamErrorKind::Timeout(*this.budget)).into()))
            }
        }
    }
}
