//! Span export end to end, into an OTLP/HTTP receiver in the test (the protobuf messages of
//! `opentelemetry-proto`): a request's server span continues the client's trace, and each
//! upstream attempt is a client span whose id is the one its `traceparent` carried; unsampled
//! traces export nothing; a dead collector costs no request anything; shutdown sends what is queued.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use bff_core::serve::Signal;
use bff_core::testing::TestServer;
use common::{StackBuilder, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use services_mock::{Faults, Service};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One received span, flattened: ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    error: bool,
    attributes: HashMap<String, String>,
    events: Vec<String>,
}

/// An OTLP/HTTP traces receiver on 127.0.0.1.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    /// The `x-collector-key` header of each export request.
    keys: Arc<Mutex<Vec<Option<String>>>>,
}

impl Collector {
    async fn start() -> (Self, TestServer) {
        let collector = Self::default();
        let router = Router::new().route("/v1/traces", post(receive)).with_state(collector.clone());
        (collector, TestServer::start(router).await)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn of_trace(&self, trace: &str) -> Vec<Received> {
        self.spans().into_iter().filter(|s| s.trace_id == trace).collect()
    }
}

async fn receive(State(collector): State<Collector>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let key = headers.get("x-collector-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    collector.keys.lock().unwrap().push(key);
    let mut spans = collector.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name.clone(),
                kind: span.kind,
                error: span.status.is_some_and(|s| s.code == SpanStatus::Error as i32),
                attributes: attributes(&span.attributes),
                events: span.events.iter().map(|e| format!("{} {:?}", e.name, attributes(&e.attributes))).collect(),
            });
        }
    }
    (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    let text = |value: &Option<AnyValue>| match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    };
    list.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

/// `GET url` in the trace `trace` (sampled or not), with `token` if any.
async fn get_in_trace(
    stack: &common::Stack,
    url: String,
    token: Option<&str>,
    trace: &str,
    sampled: bool,
) -> reqwest::Response {
    let mut request =
        stack.http.get(url).header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-0{}", u8::from(sampled)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn mobile(collector: &TestServer) -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
        .set("tracing.otlp_endpoint", &format!("\"{}\"", collector.url("")))
        .set("tracing.service_name", "\"mobile-bff\"")
        .set("tracing.headers", "{ \"x-collector-key\" = \"k-123\" }")
}

#[tokio::test]
async fn a_request_and_each_of_its_upstream_attempts_are_exported_as_spans_of_the_clients_trace() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver).start().await;
    // The first of every two orders calls fails: that call is retried.
    stack.set_faults(Service::Orders, Faults { fail_every: 2, ..Faults::default() }).await;
    stack.reset_stats();
    let token = stack.token();
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&token), CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 200);
    let sent: Vec<(Service, String)> = [Service::Users, Service::Orders, Service::Notifications]
        .into_iter()
        .flat_map(|service| stack.stats(service).traceparents.into_iter().map(move |t| (service, t)))
        .collect();
    assert_eq!(sent.len(), 4, "users, orders twice, notifications: {sent:?}");
    // The server span, one span per part and one client span per attempt, sent after the batch
    // delay.
    assert!(
        eventually(Duration::from_secs(20), || async { collector.of_trace(CLIENT_TRACE).len() >= 8 }).await,
        "{:#?}",
        collector.spans()
    );
    let spans = collector.of_trace(CLIENT_TRACE);
    assert_eq!(spans.len(), 8, "{spans:#?}");
    let server: Vec<&Received> = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
    let [server] = server.as_slice() else { panic!("one server span: {spans:#?}") };
    assert_eq!(server.parent, CLIENT_SPAN, "the client's span is the parent");
    assert_eq!(server.name, "GET /mobile/home");
    assert_eq!(server.service, "mobile-bff");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/mobile/home"),
        ("url.path", "/mobile/home"),
        ("http.response.status_code", "200"),
        ("enduser.id", "user:42"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(server.attributes.get(key).map(String::as_str), Some(value), "{key}: {server:#?}");
    }
    assert!(!server.error);
    // One span per fan-out part, under the request's span.
    let parts: Vec<&Received> = spans.iter().filter(|s| s.kind == SpanKind::Internal as i32).collect();
    let mut labels: Vec<(&str, &str, &str)> = parts
        .iter()
        .map(|p| {
            assert_eq!(p.parent, server.span_id, "{p:#?}");
            let attribute = |key| p.attributes.get(key).map_or("", String::as_str);
            (attribute("bff.part"), attribute("bff.part.required"), attribute("bff.part.degraded"))
        })
        .collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [("notifications", "false", "false"), ("orders", "true", "false"), ("users", "true", "false")],
        "{parts:#?}"
    );
    // Each attempt's span has the id its traceparent carried, under its part's span.
    for (service, traceparent) in &sent {
        let span_id = traceparent.split('-').nth(2).unwrap();
        let attempt =
            spans.iter().find(|s| s.span_id == span_id).unwrap_or_else(|| panic!("{traceparent}: {spans:#?}"));
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        let upstream = format!("{service:?}").to_lowercase();
        let part = parts.iter().find(|p| p.span_id == attempt.parent).unwrap_or_else(|| panic!("{attempt:#?}"));
        assert_eq!(part.attributes.get("bff.part"), Some(&upstream), "{attempt:#?}");
        assert_eq!(attempt.attributes.get("bff.upstream"), Some(&upstream), "{attempt:#?}");
        assert_eq!(attempt.name, format!("GET {upstream}"));
        let port = stack.mocks.service(*service).addr.port().to_string();
        assert_eq!(attempt.attributes.get("server.port"), Some(&port), "{attempt:#?}");
        assert_eq!(attempt.attributes.get("server.address").map(String::as_str), Some("127.0.0.1"));
    }
    let orders: Vec<&Received> =
        spans.iter().filter(|s| s.attributes.get("bff.upstream").map(String::as_str) == Some("orders")).collect();
    let failed = orders.iter().filter(|s| s.error).count();
    assert_eq!((orders.len(), failed), (2, 1), "the retried attempt failed: {orders:#?}");
    let statuses: Vec<&str> =
        orders.iter().filter_map(|s| s.attributes.get("http.response.status_code")).map(String::as_str).collect();
    assert!(statuses.contains(&"500") && statuses.contains(&"200"), "{statuses:?}");
    // The resend says so, and why; the first attempt does not. Each met a closed breaker.
    let resends: Vec<(Option<&String>, Option<&String>, Option<&String>)> = orders
        .iter()
        .map(|s| {
            let attribute = |key| s.attributes.get(key);
            (
                attribute("http.response.status_code"),
                attribute("http.request.resend_count"),
                attribute("bff.resend.reason"),
            )
        })
        .collect();
    let (one, retry) = (String::from("1"), String::from("retry"));
    assert!(resends.contains(&(Some(&String::from("200")), Some(&one), Some(&retry))), "{orders:#?}");
    assert!(resends.contains(&(Some(&String::from("500")), None, None)), "{orders:#?}");
    for attempt in spans.iter().filter(|s| s.kind == SpanKind::Client as i32) {
        assert_eq!(attempt.attributes.get("bff.circuit").map(String::as_str), Some("closed"), "{attempt:#?}");
        if attempt.attributes.get("http.response.status_code").map(String::as_str) == Some("200") {
            let size: u64 = attempt.attributes["http.response.body.size"].parse().unwrap();
            assert!(size > 2, "{attempt:#?}");
        }
    }
    // The collector's key went with every export; no credential went into a span.
    assert!(collector.keys.lock().unwrap().iter().all(|k| k.as_deref() == Some("k-123")));
    let everything = format!("{:?}", collector.spans());
    let signature = token.rsplit('.').next().unwrap();
    assert!(!everything.contains(signature), "the bearer token reached a span");
}

#[tokio::test]
async fn an_unsampled_trace_exports_nothing_and_a_refusal_is_an_event() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver).start().await;
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&stack.token()), unsampled, false).await;
    assert_eq!(response.status(), 200);
    // Then a sampled one, refused for want of a token: once it has arrived, anything of the first
    // would have too.
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), None, CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 401);
    assert!(eventually(Duration::from_secs(20), || async { !collector.of_trace(CLIENT_TRACE).is_empty() }).await);
    assert!(collector.of_trace(unsampled).is_empty(), "{:#?}", collector.spans());
    let refused = collector.of_trace(CLIENT_TRACE);
    let [server] = refused.as_slice() else { panic!("one span, no attempt: {refused:#?}") };
    assert_eq!(server.attributes.get("http.response.status_code").map(String::as_str), Some("401"));
    assert_eq!(server.attributes.get("error.type").map(String::as_str), Some("AUTH_REQUIRED"), "{server:#?}");
    assert!(server.events.iter().any(|e| e.starts_with("bff.refused") && e.contains("AUTH_REQUIRED")), "{server:#?}");
    assert!(!server.error, "a refusal is not the server's error");
}

#[tokio::test]
async fn a_part_left_out_is_a_degraded_part_span() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver).start().await;
    stack.set_faults(Service::Notifications, Faults { fail_every: 1, ..Faults::default() }).await;
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&stack.token()), CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-bff-degraded"));
    let degraded = |spans: &[Received]| {
        spans.iter().find(|s| s.attributes.get("bff.part").map(String::as_str) == Some("notifications")).cloned()
    };
    assert!(
        eventually(Duration::from_secs(20), || async { degraded(&collector.of_trace(CLIENT_TRACE)).is_some() }).await
    );
    let part = degraded(&collector.of_trace(CLIENT_TRACE)).unwrap();
    assert_eq!(part.attributes.get("bff.part.degraded").map(String::as_str), Some("true"), "{part:#?}");
    assert!(part.attributes.contains_key("error.type"), "{part:#?}");
    assert!(!part.error, "an optional part left out is not an error of the request");
    assert!(
        eventually(Duration::from_secs(20), || async {
            collector.of_trace(CLIENT_TRACE).iter().any(|s| s.events.iter().any(|e| e.starts_with("bff.degraded")))
        })
        .await,
        "{:#?}",
        collector.spans()
    );
}

/// The spans of `trace`, once `done` holds for them.
async fn spans_when(collector: &Collector, trace: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let arrived = eventually(Duration::from_secs(20), || async { done(&collector.of_trace(trace)) }).await;
    assert!(arrived, "{:#?}", collector.of_trace(trace));
    collector.of_trace(trace)
}

#[tokio::test]
async fn a_cache_hit_an_open_circuit_and_the_limits_decisions_are_in_the_trace() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver)
        .set("rate_limits.per-user", "{ key = \"user\", rate = 100, per = \"1m\", burst = 20 }")
        .set("upstreams.notifications.breaker", "{ consecutive_failures = 2, open_for = \"1h\" }")
        .start()
        .await;
    let token = stack.token();
    // A product twice: the second is answered by the cache, with no attempt.
    let product = stack.bff.url("/mobile/products/SKU-0001");
    let first = "11111111111111111111111111111111";
    assert_eq!(get_in_trace(&stack, product.clone(), Some(&token), first, true).await.status(), 200);
    let hit = "22222222222222222222222222222222";
    assert_eq!(get_in_trace(&stack, product, Some(&token), hit, true).await.status(), 200);
    let catalog = |spans: &[Received]| {
        spans.iter().find(|s| s.attributes.get("bff.upstream").map(String::as_str) == Some("catalog")).cloned()
    };
    let spans = spans_when(&collector, hit, |spans| catalog(spans).is_some()).await;
    let cached = catalog(&spans).unwrap();
    assert_eq!(cached.attributes.get("bff.cache").map(String::as_str), Some("hit"), "{cached:#?}");
    assert!(!cached.attributes.contains_key("server.address"), "no instance was called: {cached:#?}");
    assert!(!cached.error);
    let spans = spans_when(&collector, first, |spans| catalog(spans).is_some()).await;
    let fetched = catalog(&spans).unwrap();
    assert!(fetched.attributes.contains_key("server.address"), "{fetched:#?}");
    assert!(!fetched.attributes.contains_key("bff.cache"), "{fetched:#?}");
    // Every answer of a limited route tells what each limit left: an event of the server span.
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).unwrap();
    let limit = server.events.iter().find(|e| e.starts_with("bff.limit ")).unwrap_or_else(|| panic!("{server:#?}"));
    assert!(limit.contains("\"bff.limit\": \"per-user\"") && limit.contains("bff.limit.remaining"), "{limit}");

    // Notifications fail: after two failed calls its circuit opens, and the next call is refused
    // at once, with no attempt: a span saying so, and an event.
    stack.set_faults(Service::Notifications, Faults { fail_every: 1, ..Faults::default() }).await;
    for _ in 0..2 {
        assert_eq!(stack.get("/mobile/home").await.status(), 200);
    }
    let open = "33333333333333333333333333333333";
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&token), open, true).await;
    assert_eq!(response.status(), 200, "the badge is optional");
    let refused = |spans: &[Received]| {
        spans.iter().find(|s| s.attributes.get("error.type").map(String::as_str) == Some("circuit_open")).cloned()
    };
    let spans = spans_when(&collector, open, |spans| refused(spans).is_some()).await;
    let refused = refused(&spans).unwrap();
    assert_eq!(refused.kind, SpanKind::Client as i32);
    assert_eq!(refused.attributes.get("bff.upstream").map(String::as_str), Some("notifications"));
    assert_eq!(refused.attributes.get("bff.circuit").map(String::as_str), Some("open"));
    assert!(refused.events.iter().any(|e| e.starts_with("bff.circuit_open")), "{refused:#?}");
    let part = spans.iter().find(|s| s.span_id == refused.parent).unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(part.attributes.get("bff.part").map(String::as_str), Some("notifications"));
    // The access log lists it among the attempts, as the histogram counts it.
    let metrics = stack.admin_text("/metrics").await;
    for outcome in ["circuit_open", "cache_hit"] {
        assert!(
            metrics.lines().any(|l| l.starts_with("bff_upstream_attempt_duration_seconds_count{")
                && l.contains(&format!("outcome=\"{outcome}\""))
                && !l.ends_with(" 0")),
            "{outcome}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_part_cut_short_by_a_failed_sibling_still_ends_its_span() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver).start().await;
    // Users (required) fails at once; notifications (optional) would answer only after it.
    stack.set_faults(Service::Users, Faults { fail_every: 1, ..Faults::default() }).await;
    stack.set_faults(Service::Notifications, Faults { latency_ms: 400, ..Faults::default() }).await;
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&stack.token()), CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 502);
    let cancelled = |spans: &[Received]| {
        spans.iter().find(|s| s.attributes.get("bff.part").map(String::as_str) == Some("notifications")).cloned()
    };
    let spans = spans_when(&collector, CLIENT_TRACE, |spans| cancelled(spans).is_some()).await;
    let part = cancelled(&spans).unwrap();
    assert_eq!(part.attributes.get("bff.part.cancelled").map(String::as_str), Some("true"), "{part:#?}");
    assert!(!part.error, "{part:#?}");
}

#[tokio::test]
async fn a_traces_endpoint_is_used_as_it_is() {
    let collector = Collector::default();
    let router = Router::new().route("/otlp/spans", post(receive)).with_state(collector.clone());
    let receiver = TestServer::start(router).await;
    let stack = StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
        .set("tracing.otlp_endpoint", "\"http://127.0.0.1:9\"")
        .set("tracing.otlp_traces_endpoint", &format!("\"{}\"", receiver.url("/otlp/spans")))
        .start()
        .await;
    let response = get_in_trace(&stack, stack.bff.url("/mobile/home"), Some(&stack.token()), CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 200);
    spans_when(&collector, CLIENT_TRACE, |spans| spans.len() >= 7).await;
}

#[tokio::test]
async fn a_dead_collector_fails_no_request_and_its_spans_are_counted_as_dropped() {
    let closed = common::closed_port().await;
    let stack = StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
        .set("tracing.otlp_endpoint", &format!("\"http://127.0.0.1:{}\"", closed.port))
        .set("tracing.queue_size", "4")
        .start()
        .await;
    for _ in 0..30 {
        assert_eq!(stack.get("/mobile/home").await.status(), 200);
    }
    let dropped = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("bff_trace_spans_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // 30 requests make 120 spans: at most 4 wait, one batch is in export, the rest are dropped.
    assert!(
        eventually(Duration::from_secs(30), || async { dropped(&stack.admin_text("/metrics").await) >= 100 }).await,
        "{}",
        stack.admin_text("/metrics").await
    );
    let metrics = stack.admin_text("/metrics").await;
    assert!(metrics.contains("bff_trace_spans_dropped_total{reason=\"queue_full\"}"), "{metrics}");
    assert!(
        !metrics.lines().any(|l| l.starts_with("bff_trace_spans_exported_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_sends_the_spans_still_queued() {
    let (collector, receiver) = Collector::start().await;
    let stack = mobile(&receiver).start().await;
    let gateway = stack.gateway.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<Signal>();
    let router = bff_mobile::app(&gateway).unwrap();
    let server = tokio::spawn(async move {
        let shutdown = async move { rx.await.unwrap_or(Signal::Interrupt) };
        gateway.serve(listener, None, router, shutdown).await
    });
    let response =
        get_in_trace(&stack, format!("http://{addr}/mobile/home"), Some(&stack.token()), CLIENT_TRACE, true).await;
    assert_eq!(response.status(), 200);
    // At once: the spans wait in the queue for their batch (a second), and the shutdown sends them.
    tx.send(Signal::Interrupt).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("stopped").unwrap().unwrap();
    let spans = collector.of_trace(CLIENT_TRACE);
    assert_eq!(
        spans.len(),
        7,
        "the server span, three parts and three attempts, sent before serve returned: {spans:#?}"
    );
}
