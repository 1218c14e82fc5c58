//! Prometheus metrics: `GET /metrics`, and what every request and upstream call records.
//!
//! | metric | labels |
//! |---|---|
//! | `bff_http_requests_total` | `route` (the pattern, `unmatched` otherwise), `method`, `status` |
//! | `bff_http_request_duration_seconds` (histogram) | `route` |
//! | `bff_upstream_requests_total` | `upstream`, `outcome` (`ok`, `timeout`, `connect`, `status`, `transport`, `decode`) |
//! | `bff_upstream_request_duration_seconds` (histogram) | `upstream` |
//! | `bff_degraded_total` | `upstream`: optional parts left out of an answer |
//!
//! The recorder is process-wide (the `metrics` facade has one), installed on first use.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::upstream::{UpstreamError, UpstreamErrorKind};

const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder; `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds histogram samples into buckets every few seconds, so memory stays bounded between scrapes.
/// Runs until the returned task is aborted.
pub(crate) fn spawn_upkeep() -> Option<tokio::task::JoinHandle<()>> {
    let handle = handle()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    }))
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics_get() -> Response {
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], body).into_response()
}

/// Records one served request.
pub(crate) fn request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
    metrics::counter!("bff_http_requests_total", &labels).increment(1);
    metrics::histogram!("bff_http_request_duration_seconds", "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

/// One upstream's series, registered once so that a call only touches atomics.
pub(crate) struct UpstreamMetrics {
    ok: metrics::Counter,
    timeout: metrics::Counter,
    connect: metrics::Counter,
    status: metrics::Counter,
    transport: metrics::Counter,
    decode: metrics::Counter,
    duration: metrics::Histogram,
}

impl UpstreamMetrics {
    pub(crate) fn new(name: &str) -> Self {
        handle();
        let counter = |outcome: &'static str| metrics::counter!("bff_upstream_requests_total", "upstream" => name.to_owned(), "outcome" => outcome);
        Self {
            ok: counter("ok"),
            timeout: counter("timeout"),
            connect: counter("connect"),
            status: counter("status"),
            transport: counter("transport"),
            decode: counter("decode"),
            duration: metrics::histogram!("bff_upstream_request_duration_seconds", "upstream" => name.to_owned()),
        }
    }

    /// Records one call.
    pub(crate) fn record(&self, result: Result<(), &UpstreamError>, elapsed: Duration) {
        let counter = match result.map_err(UpstreamError::kind) {
            Ok(()) => &self.ok,
            Err(UpstreamErrorKind::Timeout(_)) => &self.timeout,
            Err(UpstreamErrorKind::Connect) => &self.connect,
            Err(UpstreamErrorKind::Status(_)) => &self.status,
            Err(UpstreamErrorKind::Transport) => &self.transport,
            Err(UpstreamErrorKind::Decode) => &self.decode,
        };
        counter.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Records an optional part left out of an answer.
pub(crate) fn degraded(upstream: &str) {
    metrics::counter!("bff_degraded_total", "upstream" => upstream.to_owned()).increment(1);
}
