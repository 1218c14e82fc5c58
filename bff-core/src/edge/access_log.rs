//! One access log line and the request metrics per request, with the route pattern it matched.

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tokio::time::Instant;

use super::around::Around;
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

/// What the way out needs of the way in.
pub(super) struct Seen {
    start: Instant,
    method: Method,
    slot: RouteSlot,
    metrics: Metrics,
}

impl Around for AccessLog {
    type State = Seen;

    fn before(&self, request: &mut Request) -> Seen {
        let slot = RouteSlot::default();
        request.extensions_mut().insert(slot.clone());
        Seen { start: Instant::now(), method: request.method().clone(), slot, metrics: self.0.clone() }
    }

    fn after(seen: Seen, response: &mut Response) {
        log(response, seen.start);
        let route = seen.slot.0.get().map_or("unmatched", MatchedPath::as_str);
        seen.metrics.request(route, &seen.method, response.status().as_u16(), seen.start.elapsed());
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
