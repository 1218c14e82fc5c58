//! Bounds each call by its upstream's timeout and by what is left of the request deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{Outbound, OutboundRequest, UpstreamError, UpstreamErrorKind};

/// Wraps a stack so that a call ends at `min(now + timeout, request deadline)`.
pub(crate) struct CallTimeout<S> {
    pub(crate) inner: S,
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
}

impl<S: Outbound> Outbound for CallTimeout<S> {
    fn call(&self, request: OutboundRequest) -> BoxFuture<'static, Result<Bytes, UpstreamError>> {
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
