//! The outermost layer: no call outlives what is left of its request's deadline.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::stack::CallContext;
use super::timeout::Bounded;
use super::{Body, BoxError};

/// How long a call without a [`CallContext`] may take here (its per-try timeout still applies).
const NO_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Ends a call, whatever is inside it (retries, waits), at its request's deadline.
#[derive(Debug, Clone)]
pub(crate) struct DeadlineLayer {
    name: Arc<str>,
}

impl DeadlineLayer {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self { name }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, name: self.name.clone() }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    name: Arc<str>,
}

impl<S> Service<Request<Body>> for Deadline<S>
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
        let now = Instant::now();
        let until = request.extensions().get::<CallContext>().map_or(now + NO_DEADLINE, |c| c.deadline);
        let budget = until.saturating_duration_since(now);
        Bounded::new(self.inner.call(request), until, budget, self.name.clone())
    }
}
