//! Prometheus metrics: a registry each gateway owns, and what every request records.
//!
//! | metric | labels |
//! |---|---|
//! | `bff_http_requests_total` | `route` (the pattern, `unmatched` otherwise), `method`, `status` |
//! | `bff_http_request_duration_seconds` (histogram) | `route` |
//! | `bff_upstream_requests_total` | `upstream`, `outcome` (`ok`, `timeout`, `connect`, `status`, `transport`, `decode`, `request`, `request_body`, `overloaded`, `circuit_open`, `dot_segment`) |
//! | `bff_upstream_request_duration_seconds` (histogram) | `upstream` |
//! | `bff_degraded_total` | `upstream`: optional parts left out of an answer |
//!
//! `GET /metrics` answers the Prometheus text format, or OpenMetrics, with trace exemplars on the
//! duration histograms' buckets, to a scraper that asks for it (`observe/openmetrics.rs`).
//!
//! Nothing is installed process-wide: two gateways in one process keep their series apart, and
//! an application embedding bff-core keeps its own `metrics` recorder.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use foldhash::fast::RandomState;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::histogram::{BUCKETS, Histograms};
use super::openmetrics::{self, ExemplarIndex, Exemplars, Sampled};

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Every metric a gateway records, with its `# HELP` text: a name not listed here is a bug
/// (debug builds panic when one is registered), so the exposition passes `promtool check metrics`.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("bff_http_requests_total", "Requests served, by route pattern (unmatched otherwise), method and status."),
    ("bff_trace_spans_exported_total", "Spans sent to the OTLP collector (tracing.otlp_endpoint)."),
    (
        "bff_trace_spans_dropped_total",
        "Spans not exported, by reason: queue_full (the collector fell behind), export_failed (it refused or did not answer).",
    ),
    ("bff_http_request_duration_seconds", "Time from a request's arrival to its response head, by route pattern."),
    (
        "bff_upstream_requests_total",
        "Upstream calls by upstream and outcome (ok, timeout, connect, status, transport, decode, request, request_body, overloaded, circuit_open, dot_segment).",
    ),
    ("bff_upstream_request_duration_seconds", "Time of each upstream call, retries included, by upstream."),
    (
        "bff_upstream_attempt_duration_seconds",
        "Time of each upstream attempt to its response head, by upstream and outcome (1xx to 5xx, timeout, connect, error; cache_hit, cache_stale, circuit_open, shed for a call with no attempt).",
    ),
    ("bff_degraded_total", "Optional parts left out of an answer, by upstream."),
    ("bff_upstream_retries_total", "Upstream retries sent, or refused by the retry budget, by upstream."),
    ("bff_upstream_hedges_total", "Hedged upstream calls sent, or refused by the retry budget, by upstream."),
    ("bff_upstream_circuit_state", "An upstream's circuit breaker: 0 closed, 1 half-open, 2 open."),
    ("bff_upstream_circuit_transitions_total", "Circuit breaker transitions, by upstream and the state entered."),
    ("bff_upstream_ejections_total", "Instances ejected for consecutive failures, by upstream."),
    ("bff_upstream_instances_ejected", "Instances of an upstream ejected now."),
    ("bff_upstream_coalesced_total", "Calls that shared an identical call in flight, by upstream."),
    ("bff_upstream_cache_total", "Response cache lookups, by upstream and result (hit, miss, revalidated, stale)."),
    (
        "bff_upstream_abandoned_total",
        "Upstream calls whose caller went away before the answer, by upstream and outcome.",
    ),
    ("bff_requests_shed_total", "Requests refused with 503 over server.max_in_flight_requests."),
    (
        "bff_rate_limit_requests_total",
        "Rate and concurrency limit decisions, by route pattern, limit and outcome (allowed, limited).",
    ),
    ("bff_concurrency_in_flight", "Requests holding a place under a concurrency limit now, all keys together."),
    ("bff_quota_requests_total", "Quota decisions, by tier and outcome (allowed, exceeded)."),
    ("bff_rate_limit_keys", "Keys counted by the in-process limiters: rate limits and requests in flight."),
    ("bff_redis_call_seconds", "Time of each Redis call of the shared limits."),
    (
        "bff_redis_errors_total",
        "Redis calls of the shared limits that failed, by kind (timeout, error); queue_full: checks not sent, too many waiting.",
    ),
    (
        "bff_redis_checks_total",
        "Requests' limit checks sent to Redis; over bff_redis_call_seconds_count, the requests per call.",
    ),
    (
        "bff_redis_lease_units_total",
        "Units of rate limits leased from Redis (redis.lease), by result: granted to a lease, lost when it ended unspent.",
    ),
    ("bff_connections_open", "Client connections open now."),
    ("bff_connections_refused_total", "Client connections refused at accept, by the cap that refused them."),
    ("bff_connections_closed_total", "Client connections closed by the server, by reason."),
    ("bff_connection_unsent_bytes", "Response bytes given to client connections and not yet taken by them."),
    ("bff_h2_streams_refused_total", "HTTP/2 streams refused over server.h2_max_unsent_bytes."),
    ("bff_config_reloads_total", "Configuration reloads, by result (ok, rejected)."),
    (
        "bff_session_events_total",
        "Browser session events, by event (login, logout, refreshed, refresh_refused: the provider ended the session).",
    ),
];

/// A gateway's metrics registry, rendered by `GET /metrics`. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    /// Counters and gauges.
    recorder: PrometheusRecorder,
    /// Histograms: buckets counted as values are recorded, so nothing waits for an upkeep.
    histograms: Histograms,
    /// By route pattern (or `unmatched`): bounded by the routes a BFF defines.
    /// Hashed with foldhash, as each request looks its route up (keys are ours, not a client's).
    routes: RwLock<HashMap<Box<str>, RouteSeries, RandomState>>,
    /// The duration histograms' exemplars, for the OpenMetrics exposition.
    exemplars: ExemplarIndex,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        for (name, help) in HELP {
            // One description per name, whatever the kind.
            recorder.describe_counter(KeyName::from_const_str(name), None, SharedString::const_str(help));
        }
        Self(Arc::new(Inner {
            recorder,
            histograms: Histograms::default(),
            routes: RwLock::default(),
            exemplars: ExemplarIndex::default(),
        }))
    }

    /// The Prometheus text format of every series, the process's own (CPU, memory, file
    /// descriptors) and the build's included.
    pub fn render(&self) -> String {
        let mut text = self.0.recorder.handle().render();
        let help = |name: &str| HELP.iter().find(|(n, _)| *n == name).map(|(_, help)| *help);
        self.0.histograms.render(help, &mut text);
        super::process::render(&mut text);
        text
    }

    /// The OpenMetrics exposition of [`Metrics::render`], with the exemplars of the duration
    /// histograms' buckets.
    pub(crate) fn render_openmetrics(&self) -> String {
        openmetrics::convert(&self.render(), &self.0.exemplars)
    }

    /// The exemplars of the `…duration_seconds` histogram series `name{labels}`.
    pub(crate) fn exemplars(&self, name: &'static str, labels: &[(&'static str, String)]) -> Arc<Exemplars> {
        self.0.exemplars.series(name, labels, BUCKETS)
    }

    /// A counter of this registry (register once, keep the handle: incrementing is an atomic).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.0.recorder.register_counter(&key(name, labels), &METADATA)
    }

    /// A gauge of this registry.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.0.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// A histogram of this registry, with the buckets of every duration histogram (1 ms to 5 s).
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        described(name);
        Histogram::from_arc(self.0.histograms.series(name, labels))
    }

    /// Records one served request; `trace` is its trace and span when the trace is sampled (an
    /// exemplar of its duration's bucket).
    ///
    /// The series of each (route, method, status) are registered on first use and kept, so a
    /// request touches two atomics under a read lock instead of building labels and hashing them
    /// into the registry.
    pub(crate) fn request(&self, route: &str, method: &Method, status: u16, elapsed: Duration, trace: Option<Sampled>) {
        let method = method_label(method);
        let elapsed = elapsed.as_secs_f64();
        {
            let routes = self.0.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = routes.get(route)
                && let Some(requests) = series.requests.get(&(method, status))
            {
                requests.increment(1);
                series.record(elapsed, trace);
                return;
            }
        }
        let mut routes = self.0.routes.write().unwrap_or_else(PoisonError::into_inner);
        let series = routes.entry(Box::from(route)).or_insert_with(|| {
            let labels = [("route", route.to_owned())];
            RouteSeries {
                duration: self.histogram("bff_http_request_duration_seconds", &labels),
                exemplars: self.exemplars("bff_http_request_duration_seconds", &labels),
                requests: HashMap::default(),
            }
        });
        let requests = series.requests.entry((method, status)).or_insert_with(|| {
            let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
            self.counter("bff_http_requests_total", &labels)
        });
        requests.increment(1);
        series.record(elapsed, trace);
    }
}

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    described(name);
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect::<Vec<_>>())
}

/// Debug builds panic on a metric with no HELP text.
fn described(name: &str) {
    debug_assert!(
        HELP.iter().any(|(n, _)| *n == name),
        "the metric `{name}` has no HELP text in observe::metrics::HELP"
    );
}

/// The registered series of one route pattern.
struct RouteSeries {
    duration: Histogram,
    exemplars: Arc<Exemplars>,
    requests: HashMap<(&'static str, u16), Counter, RandomState>,
}

impl RouteSeries {
    fn record(&self, seconds: f64, trace: Option<Sampled>) {
        self.duration.record(seconds);
        if let Some(sample) = trace {
            self.exemplars.record(seconds, sample);
        }
    }
}

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

/// `GET /metrics`: the Prometheus text format, or OpenMetrics (with exemplars) when the scraper's
/// `Accept` asks for it.
pub(crate) async fn metrics_get(State(metrics): State<Metrics>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if openmetrics::wanted(accept) {
        let kind = HeaderValue::from_static(openmetrics::CONTENT_TYPE);
        return ([(header::CONTENT_TYPE, kind)], metrics.render_openmetrics()).into_response();
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_route_method_and_status() {
        let metrics = Metrics::new();
        let route = "/test/metrics/{id}";
        let ms = Duration::from_millis(1);
        metrics.request(route, &Method::GET, 200, ms, None);
        metrics.request(route, &Method::GET, 200, ms, None);
        metrics.request(route, &Method::GET, 404, ms, None);
        metrics.request(route, &Method::from_bytes(b"BREW").unwrap(), 405, ms, None);
        metrics.request(route, &Method::from_bytes(b"PROPFIND").unwrap(), 405, ms, None);
        let text = metrics.render();
        let count = |labels: &str| {
            let prefix = format!("bff_http_requests_total{{{labels}}} ");
            text.lines().find_map(|line| line.strip_prefix(prefix.as_str())).map(str::to_owned)
        };
        assert_eq!(count(r#"route="/test/metrics/{id}",method="GET",status="200""#).as_deref(), Some("2"), "{text}");
        assert_eq!(count(r#"route="/test/metrics/{id}",method="GET",status="404""#).as_deref(), Some("1"));
        // Made-up methods share one series.
        assert_eq!(count(r#"route="/test/metrics/{id}",method="other",status="405""#).as_deref(), Some("2"));
        assert!(text.contains(r#"bff_http_request_duration_seconds_count{route="/test/metrics/{id}"} 5"#), "{text}");
        assert!(text.contains("# HELP bff_http_requests_total Requests served"), "{text}");
        assert!(text.contains("# TYPE bff_http_request_duration_seconds histogram"), "{text}");
    }

    #[test]
    fn every_metric_is_described_once() {
        for (i, (name, help)) in HELP.iter().enumerate() {
            assert!(name.starts_with("bff_") && !help.is_empty(), "{name}");
            assert!(!HELP[..i].iter().any(|(n, _)| n == name), "{name} twice");
        }
    }

    #[test]
    fn the_dashboard_and_the_alerts_query_only_exported_metrics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/observability");
        let process = ["process_cpu_seconds_total", "process_resident_memory_bytes", "bff_build_info"];
        for file in ["dashboard.json", "alerts.yml", "alerts.test.yml"] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let mut names = 0;
            for (at, _) in text.match_indices("bff_").chain(text.match_indices("process_")) {
                // A name, not part of a recorded one (`route:bff_http_errors:…`) or of a word.
                if text[..at].ends_with(|c: char| c == ':' || c == '_' || c.is_ascii_alphanumeric()) {
                    continue;
                }
                let name: String = text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                let known = HELP.iter().any(|(n, _)| *n == family) || process.contains(&family);
                assert!(known, "{file} queries `{name}`, which no gateway exports");
                names += 1;
            }
            assert!(names > 3, "{file}: {names} metric names");
        }
    }

    #[test]
    fn two_registries_do_not_share_series() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.request("/a", &Method::GET, 200, Duration::from_millis(1), None);
        assert!(a.render().contains("route=\"/a\""));
        assert!(!b.render().contains("route=\"/a\""), "{}", b.render());
    }
}
