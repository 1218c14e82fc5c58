//! The request context a handler's `Ctx` reads: the deadline clock, the route policies, the
//! request's trace, and the list of optional parts left out, reported as `X-Bff-Degraded`.

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

/// The request context of `request`: made by the span layer, which begins the request's trace
/// (and its server span, when exported), so that neither travels through the request's
/// extensions to get here (an extension is a boxed value in a hash map).
pub(super) fn begin(
    request: &Request,
    policies: &RoutePolicies,
    trace: TraceContext,
    server_span: Option<ServerSpan>,
) -> Arc<RequestMeta> {
    let id = request.headers().get(&REQUEST_ID_HEADER).cloned();
    Arc::new(RequestMeta {
        id: id.unwrap_or_else(|| HeaderValue::from_static("none")),
        policy: std::sync::OnceLock::new(),
        caller: std::sync::OnceLock::new(),
        start: Instant::now(),
        trace: Some(trace),
        server_span,
        attempts: Attempts::default(),
        policies: policies.clone(),
        degraded: Mutex::new(Degraded::default()),
    })
}

/// Writes the request context's degradations on the answer, as `X-Bff-Degraded`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Degradations;

impl Filter for Degradations {
    type State = Option<Arc<RequestMeta>>;

    fn on_request(&self, request: &mut Request) -> Result<Option<Arc<RequestMeta>>, Response> {
        Ok(request.extensions().get::<Arc<RequestMeta>>().cloned())
    }

    fn on_response(meta: Option<Arc<RequestMeta>>, response: &mut Response) {
        let Some(meta) = meta else { return };
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
