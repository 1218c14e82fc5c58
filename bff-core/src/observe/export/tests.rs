use std::borrow::Cow;
use std::sync::Mutex;
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
use tokio::sync::Semaphore;

use super::*;

/// An exporter that records each batch, after taking a permit from `gate` (none: it waits).
#[derive(Debug, Clone)]
struct Recording {
    batches: Arc<Mutex<Vec<usize>>>,
    gate: Arc<Semaphore>,
    fail: bool,
}

impl Recording {
    fn new(permits: usize, fail: bool) -> Self {
        Self { batches: Arc::default(), gate: Arc::new(Semaphore::new(permits)), fail }
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

impl SpanExporter for Recording {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.gate.acquire().await.expect("gate open").forget();
        self.batches.lock().unwrap().push(batch.len());
        if self.fail { Err(OTelSdkError::InternalFailure("refused".into())) } else { Ok(()) }
    }
}

fn span(sink: &SpanSink, id: u64) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("GET /x"),
        start_time: SystemTime::now(),
        end_time: SystemTime::now(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: sink.scope().clone(),
    }
}

/// The value of the series `name{labels}` in `metrics`' exposition, 0 when absent.
fn counted(metrics: &Metrics, series: &str) -> u64 {
    let text = metrics.render();
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn spans_wait_for_a_batch_or_its_delay_and_a_flush_sends_them_at_once() {
    let metrics = Metrics::new();
    let exporter = Recording::new(usize::MAX >> 4, false);
    let sink = SpanSink::with_exporter(exporter.clone(), 4096, &metrics);
    for id in 1..=3 {
        sink.submit(span(&sink, id));
    }
    tokio::task::yield_now().await;
    assert!(exporter.batches().is_empty(), "three spans wait for more");
    tokio::time::sleep(BATCH_DELAY + Duration::from_millis(1)).await;
    assert_eq!(exporter.batches(), [3], "the delay sends them");
    for id in 0..(MAX_BATCH as u64 + 2) {
        sink.submit(span(&sink, id + 10));
    }
    assert!(sink.flush(Duration::from_secs(1)).await);
    assert_eq!(exporter.batches(), [3, MAX_BATCH, 2], "a full batch goes at once; the flush sends the rest");
    assert_eq!(counted(&metrics, "bff_trace_spans_exported_total"), 3 + MAX_BATCH as u64 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_spans_and_never_waits() {
    let metrics = Metrics::new();
    // The collector never answers: the first batch is stuck in export.
    let exporter = Recording::new(0, false);
    let sink = SpanSink::with_exporter(exporter.clone(), 8, &metrics);
    sink.submit(span(&sink, 1));
    tokio::task::yield_now().await;
    tokio::time::sleep(BATCH_DELAY + Duration::from_millis(1)).await;
    // The task holds span 1 in its export; 8 more fill the queue; the rest are dropped.
    for id in 2..=30 {
        sink.submit(span(&sink, id));
    }
    assert_eq!(counted(&metrics, "bff_trace_spans_dropped_total{reason=\"queue_full\"}"), 21);
    assert!(!sink.flush(Duration::from_millis(100)).await, "a flush gives up at its bound");
    // The export times out: its span is counted as failed, and the queue drains.
    tokio::time::sleep(EXPORT_TIMEOUT).await;
    exporter.gate.add_permits(100);
    assert!(sink.flush(Duration::from_secs(30)).await);
    assert_eq!(counted(&metrics, "bff_trace_spans_dropped_total{reason=\"export_failed\"}"), 1);
    assert_eq!(counted(&metrics, "bff_trace_spans_exported_total"), 8);
}

#[tokio::test(start_paused = true)]
async fn a_refused_export_is_counted() {
    let metrics = Metrics::new();
    let exporter = Recording::new(100, true);
    let sink = SpanSink::with_exporter(exporter.clone(), 16, &metrics);
    sink.submit(span(&sink, 1));
    sink.submit(span(&sink, 2));
    assert!(sink.flush(Duration::from_secs(1)).await);
    assert_eq!(counted(&metrics, "bff_trace_spans_dropped_total{reason=\"export_failed\"}"), 2);
    assert_eq!(counted(&metrics, "bff_trace_spans_exported_total"), 0);
}

#[test]
fn the_traces_path_is_added_to_a_collectors_base_url() {
    assert_eq!(traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
    assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
    assert_eq!(traces_url("https://otlp.example/v1/traces"), "https://otlp.example/v1/traces");
    assert_eq!(traces_url("https://otlp.example/tenant-a/"), "https://otlp.example/tenant-a/v1/traces");
}

#[test]
fn export_headers_come_from_the_standard_variables_then_the_config() {
    let mut config = TracingConfig::default();
    config.headers.0.insert("x-api-key".to_owned(), "from-config".to_owned());
    let vars = [
        ("OTEL_EXPORTER_OTLP_HEADERS".to_owned(), "x-api-key=env, x-team=a%20b,x-shared=generic".to_owned()),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS".to_owned(), "x-shared=traces".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let headers = export_headers(&config, vars).unwrap();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(get("x-api-key").as_deref(), Some("from-config"), "the config wins");
    assert_eq!(get("x-team").as_deref(), Some("a b"), "values are percent-decoded");
    assert_eq!(get("x-shared").as_deref(), Some("traces"), "the traces variable wins");
    let bad = [("OTEL_EXPORTER_OTLP_HEADERS".to_owned(), "no-equals-sign".to_owned())];
    let (key, message) = export_headers(&TracingConfig::default(), bad).unwrap_err();
    assert_eq!(key, "OTEL_EXPORTER_OTLP_HEADERS", "{message}");
}
