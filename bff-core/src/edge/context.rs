//! The request context a handler's `Ctx` reads: the deadline clock, the route policies, and the
//! list of optional parts left out, reported as `X-Bff-Degraded`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tokio::time::Instant;

use crate::middleware::{Inner, Middleware, run};
use crate::problem::ErrorReport;
use crate::request::{DEGRADED, REQUEST_ID_HEADER, RequestMeta, RoutePolicies};

/// Creates the [`RequestMeta`] of each request.
#[derive(Debug, Clone)]
pub(super) struct Context(pub(super) RoutePolicies);

impl Middleware for Context {
    fn call<S: Inner>(&self, mut request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        let id = request.headers().get(&REQUEST_ID_HEADER).cloned().unwrap_or_else(|| HeaderValue::from_static("none"));
        let meta = Arc::new(RequestMeta {
            id,
            start: Instant::now(),
            policies: self.0.clone(),
            degraded: Mutex::new(Vec::new()),
        });
        request.extensions_mut().insert(meta.clone());
        async move {
            let mut response = run(inner, request).await;
            let degraded = meta.degraded.lock().unwrap_or_else(|e| e.into_inner()).join(", ");
            // A degradation describes an answer's content; an error response has none.
            if !degraded.is_empty()
                && response.extensions().get::<ErrorReport>().is_none()
                && let Ok(value) = HeaderValue::try_from(degraded)
            {
                response.headers_mut().insert(HeaderName::from_static(DEGRADED), value);
            }
            response
        }
    }
}
