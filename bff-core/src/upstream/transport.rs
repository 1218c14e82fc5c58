//! The innermost outbound step: one HTTP exchange over a pooled `reqwest` client.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Outbound, OutboundRequest, UpstreamError, UpstreamErrorKind};
use crate::request::REQUEST_ID;

/// Sends an [`OutboundRequest`] and returns the body of a 2xx answer.
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    pub(crate) name: Arc<str>,
    /// The base URL; each call only swaps in its path and query, so the host is parsed once.
    pub(crate) base: url::Url,
    /// The base URL's path without a trailing `/`, prefixed to every call's path.
    pub(crate) base_path: Arc<str>,
    pub(crate) client: reqwest::Client,
}

impl HttpTransport {
    pub(crate) fn new(name: Arc<str>, base: &url::Url, client: reqwest::Client) -> Self {
        let base_path = Arc::from(base.path().trim_end_matches('/'));
        Self { name, base: base.clone(), base_path, client }
    }

    fn url(&self, path_and_query: &str) -> url::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        if self.base_path.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.base_path));
        }
        url.set_query(query);
        url
    }
}

impl Outbound for HttpTransport {
    fn call(&self, request: OutboundRequest) -> BoxFuture<'static, Result<Bytes, UpstreamError>> {
        let name = self.name.clone();
        let builder =
            self.client.request(request.method, self.url(&request.path)).header(REQUEST_ID, request.request_id);
        Box::pin(async move {
            let fail = |kind, cause: reqwest::Error| UpstreamError::new(name.clone(), kind).with_cause(cause);
            let response = builder.send().await.map_err(|e| {
                let kind = if e.is_connect() { UpstreamErrorKind::Connect } else { UpstreamErrorKind::Transport };
                fail(kind, e)
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(UpstreamError::new(name.clone(), UpstreamErrorKind::Status(status)));
            }
            response.bytes().await.map_err(|e| fail(UpstreamErrorKind::Transport, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_join_the_base() {
        crate::install_crypto_provider();
        let t = |base: &str| HttpTransport::new(Arc::from("x"), &base.parse().unwrap(), reqwest::Client::new());
        assert_eq!(t("http://127.0.0.1:7001").url("/users/42").as_str(), "http://127.0.0.1:7001/users/42");
        assert_eq!(t("http://h:1/").url("/orders?user=42&limit=3").as_str(), "http://h:1/orders?user=42&limit=3");
        assert_eq!(t("http://h:1/api/").url("/users/%2F").as_str(), "http://h:1/api/users/%2F");
    }
}
