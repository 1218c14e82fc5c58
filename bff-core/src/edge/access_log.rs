//! One access log line and the request metrics per request, with the route pattern it matched.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tokio::time::Instant;

use crate::middleware::{Inner, Middleware, run};
use crate::observe::metrics::Metrics;
use crate::problem::{ErrorReport, ErrorSource};
use crate::request::DEGRADED;

/// Logs and counts every request.
#[derive(Debug, Clone)]
pub(super) struct AccessLog(pub(super) Metrics);

/// Where the route layer records the matched pattern: this layer runs before routing.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteSlot(Arc<OnceLock<MatchedPath>>);

/// Records the matched route pattern for the access log; a route layer inside the router.
pub(crate) fn mark_route(request: Request) -> Request {
    if let (Some(path), Some(slot)) =
        (request.extensions().get::<MatchedPath>(), request.extensions().get::<RouteSlot>())
    {
        let _ = slot.0.set(path.clone());
    }
    request
}

impl Middleware for AccessLog {
    fn call<S: Inner>(&self, mut request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        let (start, metrics, slot) = (Instant::now(), self.0.clone(), RouteSlot::default());
        let method = request.method().clone();
        request.extensions_mut().insert(slot.clone());
        async move {
            let response = run(inner, request).await;
            log(&response, start);
            let route = slot.0.get().map_or("unmatched", MatchedPath::as_str);
            metrics.request(route, &method, response.status().as_u16(), start.elapsed());
            response
        }
    }
}

/// The access log line; the request span around it carries the id, method and path.
fn log(response: &Response, start: Instant) {
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let degraded = response.headers().get(DEGRADED).and_then(|v| v.to_str().ok());
    match (response.extensions().get::<ErrorReport>(), degraded) {
        (Some(report), _) if report.source == ErrorSource::Internal => {
            tracing::error!(status, latency_ms, code = report.code, error = %report.message, "request failed")
        }
        (Some(report), _) => {
            tracing::warn!(status, latency_ms, code = report.code, error = %report.message, "request refused")
        }
        (None, Some(degraded)) => tracing::warn!(status, latency_ms, degraded, "request served degraded"),
        (None, None) => tracing::info!(status, latency_ms, "request served"),
    }
}
