//! Time bounds on calls: one service, [`TimeBound`], with two policies for when a call must end:
//! the request's [`Deadline`] (outermost) and the upstream's [`PerTry`] timeout (per attempt).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};

/// When a call must end, and the budget its timeout error reports.
pub(crate) trait Until: Clone {
    fn until(&self, call: &Outgoing) -> (Instant, Duration);
}

/// The request's deadline, from the call's context: no call outlives it, retries and waits
/// included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline;

impl Until for Deadline {
    fn until(&self, call: &Outgoing) -> (Instant, Duration) {
        let until = call.context.deadline;
        (until, until.saturating_duration_since(Instant::now()))
    }
}

/// The upstream's `timeout`, for each attempt (its body included, unless streamed); never past
/// the request's deadline. A call whose request body streams (a proxied upload) has one attempt,
/// and the time it takes to send grows with the body: only the deadline bounds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerTry(pub(crate) Duration);

impl Until for PerTry {
    fn until(&self, call: &Outgoing) -> (Instant, Duration) {
        let now = Instant::now();
        let deadline = call.context.deadline;
        let until = if call.request.body().is_buffered() { deadline.min(now + self.0) } else { deadline };
        (until, until.saturating_duration_since(now))
    }
}

/// Bounds the calls through it by `U`, failing them as upstream timeouts.
#[derive(Debug, Clone)]
pub(crate) struct TimeBoundLayer<U> {
    name: Arc<str>,
    until: U,
}

impl<U> TimeBoundLayer<U> {
    pub(crate) fn new(name: Arc<str>, until: U) -> Self {
        Self { name, until }
    }
}

impl<S, U: Clone> Layer<S> for TimeBoundLayer<U> {
    type Service = TimeBound<S, U>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeBound { inner, name: self.name.clone(), until: self.until.clone() }
    }
}

/// The service of [`TimeBoundLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TimeBound<S, U> {
    inner: S,
    name: Arc<str>,
    until: U,
}

impl<S, U> Service<Outgoing> for TimeBound<S, U>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
    U: Until,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Outgoing) -> Self::Future {
        let (until, budget) = self.until.until(&call);
        Bounded { inner: tokio::time::timeout_at(until, self.inner.call(call)), budget, name: self.name.clone() }
    }
}

pin_project! {
    /// `inner`, failing as an upstream timeout of `budget` when its time is up.
    pub(crate) struct Bounded<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        budget: Duration,
        name: Arc<str>,
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
