//! Span export: finished spans go into a bounded queue, and one task sends them in batches to an
//! OTLP/HTTP (protobuf) collector (`tracing.otlp_endpoint`).
//!
//! A request never waits for export: when the queue is full (the collector is slow or gone) a
//! span is dropped and counted in `bff_trace_spans_dropped_total{reason="queue_full"}`; a batch
//! the collector refuses or never answers is counted under `reason="export_failed"`, and the
//! spans sent in `bff_trace_spans_exported_total`. On shutdown what is queued is sent within the
//! grace ([`SpanSink::flush`]).
//!
//! Spans are built by the gateway itself (`observe/spans.rs`) with the ids it already logs and
//! sends upstream, rather than by a `tracing` layer: nothing is done per span unless the request's
//! trace is sampled and an endpoint is set.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use crate::config::TracingConfig;

mod otlp;

/// The most spans sent in one export request.
const MAX_BATCH: usize = 512;

/// How long a span waits in the queue for others to fill its batch.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// How long one export request may take, its retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where finished spans go: cheap to clone, shared by every request of a process (reloads keep it).
#[derive(Clone)]
pub(crate) struct SpanSink(Arc<Inner>);

struct Inner {
    queue: mpsc::Sender<Command>,
    scope: InstrumentationScope,
    queue_full: Counter,
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanSink").finish_non_exhaustive()
    }
}

enum Command {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

impl SpanSink {
    /// The sink of `config`, exporting to its `otlp_traces_endpoint` or `otlp_endpoint`, or
    /// `None` without one. Spawns the export task: must be called inside a Tokio runtime.
    pub(crate) fn from_config(config: &TracingConfig, metrics: &Metrics) -> Result<Option<Self>, (String, String)> {
        let (url, key) = match (&config.otlp_traces_endpoint, &config.otlp_endpoint) {
            (Some(traces), _) => (traces.to_string(), "tracing.otlp_traces_endpoint"),
            (None, Some(base)) => (traces_url(base.as_str()), "tracing.otlp_endpoint"),
            (None, None) => return Ok(None),
        };
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| (key.to_owned(), format!("cannot build the OTLP client: {e}")))?;
        let headers = export_headers(config, std::env::vars())?;
        let service = config.service_name.clone().unwrap_or_else(|| "bff".to_owned());
        // The SDK's detectors too: `OTEL_RESOURCE_ATTRIBUTES` and the `telemetry.sdk.*` attributes.
        let resource = Resource::builder().with_service_name(service).build();
        let exporter = otlp::OtlpHttp::new(client, url.clone(), headers, resource);
        tracing::info!(endpoint = %url, queue = config.queue_size, "exporting sampled spans over OTLP/HTTP");
        Ok(Some(Self::with_exporter(exporter, config.queue_size, metrics)))
    }

    /// A sink sending to `exporter`, queueing at most `capacity` spans.
    pub(crate) fn with_exporter(exporter: impl SpanExporter + 'static, capacity: usize, metrics: &Metrics) -> Self {
        let (queue, commands) = mpsc::channel(capacity.max(1));
        let counted = Counted {
            exported: metrics.counter("bff_trace_spans_exported_total", &[]),
            failed: metrics.counter("bff_trace_spans_dropped_total", &[("reason", "export_failed".to_owned())]),
            warned: None,
        };
        tokio::spawn(export(exporter, commands, counted));
        let queue_full = metrics.counter("bff_trace_spans_dropped_total", &[("reason", "queue_full".to_owned())]);
        let scope = InstrumentationScope::builder("bff-core").with_version(env!("CARGO_PKG_VERSION")).build();
        Self(Arc::new(Inner { queue, scope, queue_full }))
    }

    /// The instrumentation scope every span of the gateway names.
    pub(crate) fn scope(&self) -> &InstrumentationScope {
        &self.0.scope
    }

    /// Queues a finished span; drops it (counted) when the queue is full. Never waits.
    pub(crate) fn submit(&self, span: SpanData) {
        if self.0.queue.try_send(Command::Span(Box::new(span))).is_err() {
            self.0.queue_full.increment(1);
        }
    }

    /// Sends what is queued, waiting at most `within`; false if that was not enough.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        let sent = async { self.0.queue.send(Command::Flush(done)).await.is_ok() && flushed.await.is_ok() };
        tokio::time::timeout(within, sent).await.unwrap_or(false)
    }
}

/// The headers of each export: `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
/// (`key=value,…`, values percent-decoded; the second wins), then `tracing.headers` over them.
fn export_headers(
    config: &TracingConfig,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<reqwest::header::HeaderMap, (String, String)> {
    let mut listed = Vec::new();
    let mut traces = Vec::new();
    for (name, value) in vars {
        match name.as_str() {
            "OTEL_EXPORTER_OTLP_HEADERS" => listed.push((name, value)),
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => traces.push((name, value)),
            _ => {}
        }
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (variable, list) in listed.into_iter().chain(traces) {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let parsed = pair.split_once('=').and_then(|(name, value)| {
                let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8().ok()?;
                let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
                Some((name, reqwest::header::HeaderValue::from_str(&value).ok()?))
            });
            let Some((name, value)) = parsed else {
                return Err((variable, "not a list of `name=value` headers".to_owned()));
            };
            headers.insert(name, value);
        }
    }
    for (name, value) in &config.headers.0 {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(("tracing.headers".to_owned(), "a header name or value that HTTP does not allow".to_owned()));
        };
        headers.insert(name, value);
    }
    Ok(headers)
}

/// `endpoint` with the OTLP traces path: a collector's base URL (`http://collector:4318`) gets
/// `/v1/traces`, as `OTEL_EXPORTER_OTLP_ENDPOINT` does; a URL already ending in it is kept.
pub(crate) fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") }
}

struct Counted {
    exported: Counter,
    failed: Counter,
    /// When a failure was last logged: at most one line per [`WARN_EVERY`].
    warned: Option<tokio::time::Instant>,
}

/// How often a failing export is logged (it is counted each time).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The export task: batches of up to [`MAX_BATCH`] spans, sent when full, when the oldest has
/// waited [`BATCH_DELAY`], on a flush, and when every sink is gone.
async fn export(exporter: impl SpanExporter, mut commands: mpsc::Receiver<Command>, mut counted: Counted) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut due = tokio::time::Instant::now();
    loop {
        let command = if batch.is_empty() {
            commands.recv().await
        } else {
            match tokio::time::timeout_at(due, commands.recv()).await {
                Ok(command) => command,
                Err(_) => {
                    send(&exporter, &mut batch, &mut counted).await;
                    continue;
                }
            }
        };
        match command {
            Some(Command::Span(span)) => {
                if batch.is_empty() {
                    due = tokio::time::Instant::now() + BATCH_DELAY;
                }
                batch.push(*span);
                if batch.len() >= MAX_BATCH {
                    send(&exporter, &mut batch, &mut counted).await;
                }
            }
            Some(Command::Flush(done)) => {
                send(&exporter, &mut batch, &mut counted).await;
                let _ = done.send(());
            }
            None => {
                send(&exporter, &mut batch, &mut counted).await;
                return;
            }
        }
    }
}

async fn send(exporter: &impl SpanExporter, batch: &mut Vec<SpanData>, counted: &mut Counted) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let count = spans.len() as u64;
    let error = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => return counted.exported.increment(count),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
    };
    counted.failed.increment(count);
    let now = tokio::time::Instant::now();
    if counted.warned.is_none_or(|at| now >= at + WARN_EVERY) {
        counted.warned = Some(now);
        tracing::warn!(
            spans = count,
            %error,
            "span export failed; the spans are dropped (counted in bff_trace_spans_dropped_total)"
        );
    }
}

#[cfg(test)]
mod tests;
