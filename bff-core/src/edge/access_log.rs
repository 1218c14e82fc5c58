//! One access log line and the request metrics per request, with the route pattern it matched.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tokio::time::Instant;

use super::around::Around;
use crate::observe::metrics::Metrics;
use crate::problem::{ErrorReport, ErrorSource};
use crate::request::RequestMeta;
use crate::routes::RouteTable;

/// Logs and counts every request.
#[derive(Debug, Clone)]
pub(super) struct AccessLog(pub(super) Metrics);

/// Records each matched route's pattern and its [`Route`] (its policies) in the request context;
/// a route layer inside the router, the first thing a route runs.
#[derive(Clone)]
pub(crate) struct MarkRoute(pub(crate) RouteTable);

impl MarkRoute {
    /// The function a `MapRequestLayer` runs.
    pub(crate) fn mark_fn(&self) -> impl Fn(Request) -> Request + Clone + Send + Sync + 'static {
        let marker = self.clone();
        move |request| marker.mark(request)
    }

    fn mark(&self, request: Request) -> Request {
        let extensions = request.extensions();
        if let (Some(path), Some(meta)) = (extensions.get::<MatchedPath>(), extensions.get::<Arc<RequestMeta>>()) {
            if let Some(route) = self.0.get(path.as_str()) {
                let _ = meta.policy.set(route.clone());
            }
            let _ = meta.route.set(path.clone());
        }
        request
    }
}

/// What the way out needs of the way in.
pub(super) struct Seen {
    start: Instant,
    method: Method,
    /// The request context (the layer outside made it): the route and the degradations.
    meta: Option<Arc<RequestMeta>>,
    metrics: Metrics,
}

impl Around for AccessLog {
    type State = Seen;

    fn before(&self, request: &mut Request) -> Seen {
        let meta = request.extensions().get::<Arc<RequestMeta>>().cloned();
        Seen { start: Instant::now(), method: request.method().clone(), meta, metrics: self.0.clone() }
    }

    fn after(seen: Seen, response: &mut Response) {
        let meta = seen.meta.as_deref();
        let degraded = meta.and_then(|m| m.degraded.lock().unwrap_or_else(|e| e.into_inner()).header_value());
        log(response, seen.start, degraded.as_deref());
        let route = meta.and_then(|m| m.route.get()).map_or("unmatched", MatchedPath::as_str);
        seen.metrics.request(route, &seen.method, response.status().as_u16(), seen.start.elapsed());
    }
}

/// The access log line; the request span around it carries the id, method and path.
fn log(response: &Response, start: Instant, degraded: Option<&str>) {
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
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
