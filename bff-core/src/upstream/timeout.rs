//! Bounds each call by its upstream's timeout and by what is left of the request deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::{OutboundRequest, UpstreamError, UpstreamErrorKind};

/// Wraps a service so that a call ends at `min(now + timeout, request deadline)`.
#[derive(Debug, Clone)]
pub(crate) struct CallTimeout<S> {
    pub(crate) inner: S,
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
}

impl<S> tower::Service<OutboundRequest> for CallTimeout<S>
where
    S: tower::Service<OutboundRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: OutboundRequest) -> Self::Future {
        let now = Instant::now();
        let until = request.deadline.min(now + self.timeout);
        let budget = until.saturating_duration_since(now);
        let name = self.name.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(until, call).await {
                Ok(result) => result,
                Err(_) => Err(UpstreamError::new(name, UpstreamErrorKind::Timeout(budget))),
            }
        })
    }
}
