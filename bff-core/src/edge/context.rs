//! The request context a handler's `Ctx` reads: the deadline clock, the route policies, and the
//! list of optional parts left out, reported as `X-Bff-Degraded`.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tokio::time::Instant;

use crate::middleware::Filter;
use crate::observe::spans::ServerSpan;
use crate::observe::trace_context::TraceContext;
use crate::problem::ErrorReport;
use crate::request::{DEGRADED, Degraded, REQUEST_ID_HEADER, RequestMeta, RoutePolicies};
use crate::upstream::Attempts;

/// Creates the [`RequestMeta`] of each request.
#[derive(Debug, Clone)]
pub(super) struct Context(pub(super) RoutePolicies);

impl Filter for Context {
    type State = Arc<RequestMeta>;

    fn on_request(&self, request: &mut Request) -> Result<Arc<RequestMeta>, Response> {
        let id = request.headers().get(&REQUEST_ID_HEADER).cloned();
        let meta = Arc::new(RequestMeta {
            id: id.unwrap_or_else(|| HeaderValue::from_static("none")),
            policy: std::sync::OnceLock::new(),
            caller: std::sync::OnceLock::new(),
            start: Instant::now(),
            // The span layer outside began it.
            trace: request.extensions_mut().remove::<TraceContext>(),
            server_span: request.extensions_mut().remove::<ServerSpan>(),
            attempts: Attempts::default(),
            policies: self.0.clone(),
            degraded: Mutex::new(Degraded::default()),
        });
        request.extensions_mut().insert(meta.clone());
        Ok(meta)
    }

    fn on_response(meta: Arc<RequestMeta>, response: &mut Response) {
        let degraded = meta.degraded.lock().unwrap_or_else(|e| e.into_inner()).header_value();
        // A degradation describes an answer's content; an error response has none.
        if let Some(degraded) = degraded
            && response.extensions().get::<ErrorReport>().is_none()
            && let Ok(value) = HeaderValue::try_from(degraded)
        {
            response.headers_mut().insert(HeaderName::from_static(DEGRADED), value);
        }
    }
}
