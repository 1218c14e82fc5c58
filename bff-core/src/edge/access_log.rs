//! One access log line and the request metrics per request, with the route pattern it matched.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tokio::time::Instant;

use crate::identity::Tenant;
use crate::middleware::Filter;
use crate::observe::inline::Inline;
use crate::observe::metrics::Metrics;
use crate::observe::openmetrics::Sampled;
use crate::observe::spans::Answered;
use crate::problem::{ErrorReport, ErrorSource};
use crate::request::RequestMeta;

/// Logs and counts every request.
#[derive(Debug, Clone)]
pub(super) struct AccessLog(pub(super) Metrics);

/// What the way out needs of the way in.
pub(super) struct Seen {
    start: Instant,
    method: Method,
    /// The request context (the layer outside made it): the route and the degradations.
    meta: Option<Arc<RequestMeta>>,
    metrics: Metrics,
    /// The path as it came, kept only for a request whose span is exported.
    path: Option<Box<str>>,
}

impl Filter for AccessLog {
    type State = Seen;

    fn on_request(&self, request: &mut Request) -> Result<Seen, Response> {
        let meta = request.extensions().get::<Arc<RequestMeta>>().cloned();
        let path = meta.as_ref().filter(|m| m.server_span.is_some()).map(|_| Box::from(request.uri().path()));
        Ok(Seen { start: Instant::now(), method: request.method().clone(), meta, metrics: self.0.clone(), path })
    }

    fn on_response(seen: Seen, response: &mut Response) {
        let meta = seen.meta.as_deref();
        let degraded = meta.and_then(|m| m.degraded.lock().unwrap_or_else(|e| e.into_inner()).header_value());
        let caller = meta.and_then(|m| m.caller.get()).and_then(|c| c.tenant());
        // What each of the route's limits left the caller, as the `RateLimit` field tells it.
        let limits = response.headers().get("ratelimit").and_then(|v| v.to_str().ok());
        // One reading of the clock for the line and the metrics.
        let elapsed = seen.start.elapsed();
        log(response, elapsed, Noted { degraded: degraded.as_deref(), caller, limits }, meta);
        let pattern = meta.and_then(|m| m.policy.get()).map(|r| &*r.pattern);
        let sampled = meta.and_then(|m| m.trace.as_ref()).filter(|t| t.sampled);
        let at = (seen.start + elapsed).into_std();
        seen.metrics.request(
            pattern.unwrap_or("unmatched"),
            &seen.method,
            response.status().as_u16(),
            elapsed,
            sampled.map(|t| Sampled { trace_id: t.trace_id, span_id: t.span_id, at }),
        );
        if let Some(meta) = meta
            && let (Some(span), Some(trace)) = (&meta.server_span, &meta.trace)
        {
            let report = response.extensions().get::<ErrorReport>();
            let answered = Answered {
                method: &seen.method,
                route: pattern,
                path: seen.path.as_deref().unwrap_or_default(),
                status: response.status().as_u16(),
                caller,
                problem: report.map(|r| (r.code, r.source == ErrorSource::Internal)),
                degraded: degraded.as_deref(),
                limits,
            };
            span.end(trace, &answered);
        }
    }
}

/// What the access line notes beyond the status and latency, each when there is one.
struct Noted<'a> {
    degraded: Option<&'a str>,
    caller: Option<Tenant<'a>>,
    limits: Option<&'a str>,
}

/// The access log line: the request span around it carries the id, method, path and trace; the
/// line adds the verified caller (`user:<id>` or `account:<name>`, never a credential), the
/// upstream attempts (`users:200:3,orders:500:12`) and the limits' decisions (`"per-user";r=19;t=1`:
/// what each left, and the seconds until it is whole), each when there is one.
fn log(response: &Response, elapsed: Duration, noted: Noted<'_>, meta: Option<&RequestMeta>) {
    let Noted { degraded, caller, limits } = noted;
    let status = response.status().as_u16();
    let caller = caller.map(tracing::field::display);
    // Whole microseconds: `5.466`, where the float of the nanoseconds printed `5.466216999999999`.
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1000.0;
    let (mut inline, mut spilled) = (Inline::<256>::new(), String::new());
    let attempts = meta.and_then(|m| m.attempts.text(&mut inline, &mut spilled));
    match (response.extensions().get::<ErrorReport>(), degraded) {
        (Some(report), _) if report.source == ErrorSource::Internal => {
            tracing::error!(status, latency_ms, caller, attempts, limits, code = report.code, error = %report.message, "request failed")
        }
        (Some(report), _) => {
            tracing::warn!(status, latency_ms, caller, attempts, limits, code = report.code, error = %report.message, "request refused")
        }
        (None, Some(degraded)) => {
            tracing::warn!(status, latency_ms, caller, attempts, limits, degraded, "request served degraded")
        }
        (None, None) => tracing::info!(status, latency_ms, caller, attempts, limits, "request served"),
    }
}
