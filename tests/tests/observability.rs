//! Observability end to end. W3C Trace Context: a request's trace reaches every upstream
//! attempt, each with a span of its own; a client's malformed or untrusted `traceparent` starts a
//! new trace. The Prometheus exposition passes the real `promtool check metrics`.

mod common;

use common::StackBuilder;
use services_mock::{Faults, Service};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

/// A `traceparent` as W3C writes it: `(trace id, span id, flags)`.
fn parse(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    assert!(hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2), "{traceparent}");
    assert!(parts[1].bytes().any(|b| b != b'0') && parts[2].bytes().any(|b| b != b'0'), "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

async fn home_with(stack: &common::Stack, headers: &[(&str, &str)]) -> u16 {
    let mut request = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_upstream_attempt_carries_the_clients_trace_with_a_span_of_its_own() {
    let stack = mobile().start().await;
    // The first of every two orders calls fails: that call is retried.
    stack.set_faults(Service::Orders, Faults { fail_every: 2, ..Faults::default() }).await;
    stack.reset_stats();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    assert_eq!(home_with(&stack, &[("traceparent", &traceparent), ("tracestate", state)]).await, 200);

    let mut spans = Vec::new();
    for service in [Service::Users, Service::Orders, Service::Notifications] {
        let stats = stack.stats(service);
        for sent in &stats.traceparents {
            let (trace, span, flags) = parse(sent);
            assert_eq!(trace, CLIENT_TRACE, "{service:?}: {sent}");
            assert_eq!(flags, "01", "the client's sampled flag: {sent}");
            assert_ne!(span, CLIENT_SPAN, "{service:?}: the client's span is not the attempt's");
            spans.push(span);
        }
        assert_eq!(stats.last_headers.get("tracestate").map(String::as_str), Some(state), "{service:?}");
        let expected = if service == Service::Orders { 2 } else { 1 };
        assert_eq!(stats.traceparents.len(), expected, "{service:?}: one traceparent per attempt");
    }
    let distinct: std::collections::HashSet<&String> = spans.iter().collect();
    assert_eq!(distinct.len(), spans.len(), "each attempt, the retry included, has its own span: {spans:?}");
}

#[tokio::test]
async fn a_malformed_traceparent_or_none_starts_a_new_trace_and_never_fails_the_request() {
    let stack = mobile().start().await;
    let malformed = [
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra"),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}"),
        "x".repeat(4000),
        String::new(),
    ];
    let mut traces = Vec::new();
    for value in &malformed {
        stack.reset_stats();
        // The client's tracestate goes with the trace it came with, not into a new one.
        assert_eq!(home_with(&stack, &[("traceparent", value), ("tracestate", "a=1")]).await, 200, "{value}");
        let stats = stack.stats(Service::Users);
        let (trace, _, _) = parse(stats.traceparents.last().expect("a traceparent"));
        assert_ne!(trace, CLIENT_TRACE, "{value}");
        assert!(!stats.last_headers.contains_key("tracestate"), "{value}");
        traces.push(trace);
    }
    for _ in 0..2 {
        stack.reset_stats();
        assert_eq!(home_with(&stack, &[]).await, 200);
        let users = stack.stats(Service::Users);
        let orders = stack.stats(Service::Orders);
        let (trace, _, flags) = parse(users.traceparents.last().expect("a traceparent without one from the client"));
        assert_eq!(parse(&orders.traceparents[0]).0, trace, "one request, one trace");
        assert_eq!(flags, "01", "new traces are sampled at the default ratio of 1");
        traces.push(trace);
    }
    let distinct: std::collections::HashSet<&String> = traces.iter().collect();
    assert_eq!(distinct.len(), traces.len(), "every new trace is new: {traces:?}");
}

#[tokio::test]
async fn a_public_edge_can_refuse_clients_traces() {
    let stack = mobile().set("tracing.accept_parent", "\"never\"").set("tracing.sample_ratio", "0.0").start().await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    stack.reset_stats();
    assert_eq!(home_with(&stack, &[("traceparent", &traceparent)]).await, 200);
    let (trace, _, flags) = parse(&stack.stats(Service::Users).traceparents[0]);
    assert_ne!(trace, CLIENT_TRACE);
    assert_eq!(flags, "00", "a new trace at ratio 0 is not sampled");
}

#[tokio::test]
async fn a_passthrough_route_sends_the_trace_not_the_clients_headers() {
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await;
    stack.reset_stats();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let response = stack
        .http
        .get(stack.bff.url("/api/catalog/products/SKU-0002"))
        .header("traceparent", &traceparent)
        .header("tracestate", "vendor=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stats = stack.stats(Service::Catalog);
    assert_eq!(stats.traceparents.len(), 1);
    let (trace, span, flags) = parse(&stats.traceparents[0]);
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(span, CLIENT_SPAN, "the attempt's span, not the client's");
    assert_eq!(stats.last_headers.get("tracestate").map(String::as_str), Some("vendor=x"));
}

#[tokio::test]
async fn bad_tracing_settings_name_their_key() {
    for (key, value, expected) in [
        ("tracing.sample_ratio", "1.5", "tracing.sample_ratio"),
        ("tracing.accept_parent", "\"trusted_proxies\"", "server.trusted_proxies"),
        ("tracing.accept_parent", "\"sometimes\"", "tracing.accept_parent"),
        ("tracing.otlp_endpoint", "\"collector:4318\"", "tracing.otlp_endpoint"),
        ("tracing.otlp_endpoint", "\"https://user:secret@collector:4318\"", "tracing.headers"),
        ("tracing.queue_size", "0", "tracing.queue_size"),
        ("tracing.service_name", "\"\"", "tracing.service_name"),
        ("tracing.headers", "{ \"x key\" = \"1\" }", "tracing.headers.x key"),
        ("tracing.headers", "{ \"x-key\" = \"line\\nbreak\" }", "tracing.headers.x-key"),
    ] {
        let mut overrides = bff_core::config::Overrides::default();
        overrides.set(key.to_owned(), value.to_owned(), "test");
        let source =
            bff_core::config::ConfigSource { name: "mobile.toml".into(), text: bff_demo::MOBILE_CONFIG.into() };
        let error = bff_core::config::load(&source, &overrides).expect_err(key).to_string();
        assert!(error.contains(expected), "{key} = {value}: {error}");
    }
}

/// What `promtool check metrics` says of `text`: `None` when it is not installed (a panic under
/// `CI=true`: CI installs it).
fn promtool_check(text: &str) -> Option<(bool, String)> {
    promtool(&["check", "metrics"], text)
}

/// Whether `promtool args` succeeds with `input` on its standard input, and what it said; `None`
/// when it is not installed (a panic under `CI=true`: CI installs it).
fn promtool(args: &[&str], input: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/observability"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let missing = "promtool is not installed (apt-get install prometheus)";
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{missing}");
            }
            eprintln!("skipped: {missing}");
            return None;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), said))
}

#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() {
    let Some((ok, said)) = promtool(&["check", "rules", "alerts.yml"], "") else { return };
    assert!(ok, "promtool check rules:\n{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yml"], "").unwrap();
    assert!(ok, "promtool test rules:\n{said}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/observability");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/dashboard.json")).unwrap()).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            // Grafana's variables, as Grafana fills them in.
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$job", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query{count}\n        expr: {}\n",
                serde_json::json!(expr)
            ));
            count += 1;
        }
    }
    assert!(count >= 20, "{count} queries");
    let path = std::env::temp_dir().join(format!("bff-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&path, &rules).unwrap();
    let checked = promtool(&["check", "rules", path.to_str().unwrap()], "");
    let _ = std::fs::remove_file(&path);
    if let Some((ok, said)) = checked {
        assert!(ok, "promtool check rules on the dashboard's queries:\n{said}\n{rules}");
    }
}

#[tokio::test]
async fn the_exposition_passes_promtool_with_every_family_described() {
    // Series of every kind: requests served, refused, degraded, proxied; upstream calls retried.
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await;
    stack.set_faults(Service::Orders, Faults { fail_every: 2, ..Faults::default() }).await;
    for path in ["/web/home", "/web/home", "/web/products/SKU-0002", "/api/catalog/products/SKU-0002", "/nope"] {
        let _ = stack.get(path).await;
    }
    let text = stack.admin_text("/metrics").await;
    for family in ["bff_http_requests_total", "bff_upstream_requests_total", "bff_upstream_retries_total"] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}: {text}");
    }
    assert!(text.contains("bff_build_info{version=\"") && text.contains("process_resident_memory_bytes "), "{text}");
    // Each attempt by outcome: the orders call that failed, and its retry.
    for outcome in ["2xx", "5xx"] {
        let series =
            format!("bff_upstream_attempt_duration_seconds_count{{upstream=\"orders\",outcome=\"{outcome}\"}}");
        assert!(text.contains(&series), "{series}: {text}");
    }
    if let Some((ok, said)) = promtool_check(&text) {
        // Lint findings are printed, and fail it, even when the exit status is 0.
        assert!(ok && said.trim().is_empty(), "promtool check metrics:\n{said}");
    }
}

/// A `prometheus` server of its own, killed and its data removed on drop.
struct Prometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Scraping `target` every second; `None` when it is not installed (a panic under `CI=true`).
    async fn start(target: std::net::SocketAddr) -> Option<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("bff-prometheus-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: bff\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // Port 0, and the port its log says it took: one picked beforehand may be taken meanwhile.
        let spawned = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            // Exemplars are kept only with this feature, and scraped only over OpenMetrics.
            .arg("--enable-feature=exemplar-storage")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn();
        match spawned {
            Ok(child) => {
                let mut prometheus = Self { child, dir, url: String::new() };
                let port = prometheus.listening().await;
                prometheus.url = format!("http://127.0.0.1:{port}");
                Some(prometheus)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let missing = "prometheus is not installed (apt-get install prometheus)";
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("{missing}");
                }
                eprintln!("skipped: {missing}");
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
            Err(e) => panic!("prometheus: {e}"),
        }
    }

    /// The value of the instant `query`'s first sample, if it has one.
    async fn query(&self, http: &reqwest::Client, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query", self.url);
        let answer = http.get(url).query(&[("query", query)]).send().await.ok()?;
        let body: serde_json::Value = answer.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The trace ids of the exemplars of the series `selector` over the last ten minutes.
    async fn exemplar_traces(&self, http: &reqwest::Client, selector: &str) -> Vec<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let url = format!("{}/api/v1/query_exemplars", self.url);
        let range =
            [("query", selector.to_owned()), ("start", (now - 600).to_string()), ("end", (now + 60).to_string())];
        let Ok(answer) = http.get(url).query(&range).send().await else { return Vec::new() };
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let series = body["data"].as_array().cloned().unwrap_or_default();
        series
            .iter()
            .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The port of its `msg="Listening on" address=127.0.0.1:N` log line, once it is written.
    async fn listening(&mut self) -> u16 {
        let within = std::time::Duration::from_secs(60);
        let mut port = None;
        let mut exited = None;
        let said = common::eventually(within, || {
            port = self.log().lines().find_map(|line| {
                let (_, address) = line.split_once("msg=\"Listening on\" address=127.0.0.1:")?;
                address.split_whitespace().next()?.parse::<u16>().ok()
            });
            exited = self.child.try_wait().ok().flatten();
            std::future::ready(port.is_some() || exited.is_some())
        })
        .await;
        match (port, said) {
            (Some(port), _) => port,
            (None, true) => panic!("prometheus exited ({exited:?}) before it listened:\n{}", self.log()),
            (None, false) => panic!("prometheus did not listen within {within:?}:\n{}", self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_admin_listener_and_sees_a_routes_rate() {
    let stack = mobile().start().await;
    let Some(prometheus) = Prometheus::start(stack.admin.addr).await else { return };
    let rate = r#"sum(rate(bff_http_requests_total{job="bff",route="/mobile/home",status="200"}[30s]))"#;
    let mut seen = None;
    // Real time: Prometheus scrapes every second; a wide margin for a loaded machine.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while std::time::Instant::now() < give_up {
        assert_eq!(home_with(&stack, &[]).await, 200);
        if let Some(value) = prometheus.query(&stack.http, rate).await.filter(|v| *v > 0.0) {
            seen = Some(value);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(seen.is_some(), "no rate for /mobile/home within 90 s; prometheus said:\n{}", prometheus.log());
    // The target is up, and the process's and build's series are there too.
    assert_eq!(prometheus.query(&stack.http, r#"up{job="bff"}"#).await, Some(1.0));
    assert_eq!(prometheus.query(&stack.http, "bff_build_info").await, Some(1.0));
    let rss = prometheus.query(&stack.http, "process_resident_memory_bytes").await.unwrap_or(0.0);
    assert!(rss > 1e6, "resident memory {rss}");
    // Scraped as OpenMetrics, the duration buckets carry the trace of the latest sampled request
    // in each: this one's, as no other request follows it.
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(home_with(&stack, &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))]).await, 200);
    for selector in [
        r#"bff_http_request_duration_seconds_bucket{route="/mobile/home"}"#,
        r#"bff_upstream_attempt_duration_seconds_bucket{upstream="users"}"#,
    ] {
        let kept = || async { prometheus.exemplar_traces(&stack.http, selector).await.iter().any(|t| t == trace) };
        assert!(
            common::eventually(std::time::Duration::from_secs(90), kept).await,
            "{selector}: {:?}; prometheus said:\n{}",
            prometheus.exemplar_traces(&stack.http, selector).await,
            prometheus.log()
        );
    }
}
