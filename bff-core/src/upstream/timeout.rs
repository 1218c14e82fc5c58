//! The time bound on each attempt of a call, [`TimeBound`]: the upstream's `timeout`, never past
//! the request's deadline.
//!
//! Nothing else in the outbound stack bounds a call's time, and nothing needs to: every attempt
//! ends by the deadline, and every wait between attempts does too. A retry is not made when its
//! backoff would end past the deadline (`upstream/retry.rs`); a hedge is sent only while the
//! first attempt runs (`upstream/hedge.rs`); the HTTP/2 resend does not wait; the breaker, the
//! bulkhead and the balance never hold a call. So no call outlives its request's deadline, with
//! one timer armed per attempt. A layer added between them that waits must end by the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::body::SentBody;
use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};

/// The upstream's `timeout`, for each attempt (its body included, unless streamed); never past
/// the request's deadline. A call whose request body streams (a proxied upload) has one attempt,
/// and the time it takes to send grows with the body: only the deadline bounds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerTry(pub(crate) Duration);

impl PerTry {
    /// When `call`'s attempt must end, and the budget its timeout error reports.
    fn until(self, call: &Outgoing) -> (Instant, Duration) {
        let now = call.started.unwrap_or_else(Instant::now);
        let deadline = call.context.deadline;
        let until = if call.request.body().is_buffered() { deadline.min(now + self.0) } else { deadline };
        (until, until.saturating_duration_since(now))
    }
}

/// Bounds each attempt through it by [`PerTry`], failing it as an upstream timeout, and hands
/// the attempt's HTTP request to the client inside it ([`Outgoing::into_request`]).
#[derive(Debug, Clone)]
pub(crate) struct TimeBoundLayer {
    name: Arc<str>,
    per_try: PerTry,
}

impl TimeBoundLayer {
    pub(crate) fn new(name: Arc<str>, per_try: PerTry) -> Self {
        Self { name, per_try }
    }
}

impl<S> Layer<S> for TimeBoundLayer {
    type Service = TimeBound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeBound { inner, name: self.name.clone(), per_try: self.per_try }
    }
}

/// The service of [`TimeBoundLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TimeBound<S> {
    inner: S,
    name: Arc<str>,
    per_try: PerTry,
}

impl<S> Service<Outgoing> for TimeBound<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Outgoing) -> Self::Future {
        let (until, budget) = self.per_try.until(&call);
        let body = call.request.body_mut().watch();
        let inner = self.inner.call(call.into_request());
        Bounded { inner: tokio::time::timeout_at(until, inner), budget, name: self.name.clone(), body }
    }
}

pin_project! {
    /// `inner`, failing as an upstream timeout of `budget` when its time is up. With a streamed
    /// request body (`body`), a failure while the body broke off, or a time up before it was all
    /// sent, is the body's source's (a client's), not the upstream's: `RequestBody`, which no
    /// breaker counts.
    pub(crate) struct Bounded<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        budget: Duration,
        name: Arc<str>,
        body: Option<Arc<SentBody>>,
    }
}

impl<F, R> Future for Bounded<F>
where
    F: Future<Output = Result<R, BoxError>>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let body = this.body.as_deref();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Err(error))) if body.is_some_and(SentBody::failed) => {
                let kind = UpstreamErrorKind::RequestBody;
                Poll::Ready(Err(UpstreamError::new(this.name.clone(), kind).with_cause(error).into()))
            }
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) if body.is_some_and(|b| !b.finished()) => {
                let kind = UpstreamErrorKind::RequestBodyTimeout(*this.budget);
                Poll::Ready(Err(UpstreamError::new(this.name.clone(), kind).into()))
            }
            Poll::Ready(Err(_)) => {
                Poll::Ready(Err(UpstreamError::new(this.name.clone(), UpstreamErrorKind::Timeout(*this.budget)).into()))
            }
        }
    }
}
