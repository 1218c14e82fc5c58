//! The innermost outbound service: one HTTP exchange over a pooled `reqwest` client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::{OutboundRequest, UpstreamError, UpstreamErrorKind};
use crate::request::REQUEST_ID;

/// Sends an [`OutboundRequest`] and returns the body of a 2xx answer.
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    pub(crate) name: Arc<str>,
    pub(crate) base: Arc<str>,
    pub(crate) client: reqwest::Client,
}

impl tower::Service<OutboundRequest> for HttpTransport {
    type Response = Bytes;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: OutboundRequest) -> Self::Future {
        let name = self.name.clone();
        let url = format!("{}{}", self.base, request.path);
        let builder = self
            .client
            .request(request.method, url)
            .header(REQUEST_ID, request.request_id);
        Box::pin(async move {
            let fail = |kind, cause: reqwest::Error| {
                UpstreamError::new(name.clone(), kind).with_cause(cause)
            };
            let response = builder.send().await.map_err(|e| {
                let kind = if e.is_connect() {
                    UpstreamErrorKind::Connect
                } else {
                    UpstreamErrorKind::Transport
                };
                fail(kind, e)
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(UpstreamError::new(
                    name.clone(),
                    UpstreamErrorKind::Status(status),
                ));
            }
            response
                .bytes()
                .await
                .map_err(|e| fail(UpstreamErrorKind::Transport, e))
        })
    }
}
