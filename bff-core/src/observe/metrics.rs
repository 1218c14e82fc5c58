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

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
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
///
/// The series of each (route, method, status) are registered on first use and kept here, so a
/// request touches two atomics under a read lock instead of building labels and hashing them into
/// the registry (that was 16 allocations a request).
pub(crate) fn request(route: &str, method: &Method, status: u16, elapsed: Duration) {
    let method = method_label(method);
    let elapsed = elapsed.as_secs_f64();
    {
        let routes = ROUTES.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = routes.get(route)
            && let Some(requests) = series.requests.get(&(method, status))
        {
            requests.increment(1);
            series.duration.record(elapsed);
            return;
        }
    }
    let mut routes = ROUTES.write().unwrap_or_else(PoisonError::into_inner);
    let series = routes.entry(Box::from(route)).or_insert_with(|| RouteSeries {
        duration: metrics::histogram!("bff_http_request_duration_seconds", "route" => route.to_owned()),
        requests: HashMap::new(),
    });
    let requests = series.requests.entry((method, status)).or_insert_with(|| {
        let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        metrics::counter!("bff_http_requests_total", &labels)
    });
    requests.increment(1);
    series.duration.record(elapsed);
}

/// The registered series of one route pattern.
struct RouteSeries {
    duration: metrics::Histogram,
    requests: HashMap<(&'static str, u16), metrics::Counter>,
}

/// By route pattern (or `unmatched`): bounded by the routes a BFF defines.
static ROUTES: LazyLock<RwLock<HashMap<Box<str>, RouteSeries>>> = LazyLock::new(Default::default);

/// The `method` label: the standard methods by name, anything else as `other`, so a client
/// sending made-up methods cannot grow the number of series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_route_method_and_status() {
        let handle = handle().expect("this test process installs the recorder");
        let route = "/test/metrics/{id}";
        let ms = Duration::from_millis(1);
        request(route, &Method::GET, 200, ms);
        request(route, &Method::GET, 200, ms);
        request(route, &Method::GET, 404, ms);
        request(route, &Method::from_bytes(b"BREW").unwrap(), 405, ms);
        request(route, &Method::from_bytes(b"PROPFIND").unwrap(), 405, ms);
        let text = handle.render();
        let count = |labels: &str| {
            let prefix = format!("bff_http_requests_total{{{labels}}} ");
            text.lines().find_map(|line| line.strip_prefix(prefix.as_str())).map(str::to_owned)
        };
        assert_eq!(count(r#"route="/test/metrics/{id}",method="GET",status="200""#).as_deref(), Some("2"), "{text}");
        assert_eq!(count(r#"route="/test/metrics/{id}",method="GET",status="404""#).as_deref(), Some("1"));
        // Made-up methods share one series.
        assert_eq!(count(r#"route="/test/metrics/{id}",method="other",status="405""#).as_deref(), Some("2"));
        assert!(text.contains(r#"bff_http_request_duration_seconds_count{route="/test/metrics/{id}"} 5"#), "{text}");
    }
}
