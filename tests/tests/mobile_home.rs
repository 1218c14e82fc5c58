//! `/mobile/home` end to end: shape, parallelism, degradation, failures, auth, request ids, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, StackBuilder, closed_port, eventually, latency, problem};
use serde_json::{Value, json};
use services_mock::{Faults, Service, data};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

async fn warm(stack: &Stack) {
    assert_eq!(stack.get("/mobile/home").await.status(), 200);
    stack.reset_stats();
}

#[tokio::test]
async fn home_has_the_seeds_shape_with_the_mocks_values() {
    let stack = mobile().start().await;
    let response = stack.get("/mobile/home").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-bff-degraded").is_none());
    let body: Value = response.json().await.unwrap();

    let orders = data::orders(42, 3);
    let expected = json!({
        "name": data::user(42)["displayName"],
        "recentOrders": orders.iter().map(|o| json!({ "id": o["id"], "total": o["total"] })).collect::<Vec<_>>(),
        "badge": data::unread_count(42),
    });
    assert_eq!(body, expected);
    assert_eq!(body["recentOrders"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn upstream_calls_run_in_parallel() {
    let stack = mobile().start().await;
    warm(&stack).await;
    for service in [Service::Users, Service::Orders, Service::Notifications] {
        stack.set_faults(service, latency(100)).await;
    }
    // Sequential calls take at least 300 ms, so one answer under 200 ms proves parallelism; the
    // fastest of three keeps a loaded CI machine's scheduling hiccups out of the verdict.
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let response = stack.get("/mobile/home").await;
        let elapsed = start.elapsed();
        assert_eq!(response.status(), 200);
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        fastest = fastest.min(elapsed);
    }
    assert!(fastest < Duration::from_millis(200), "fastest of three took {fastest:?}");
}

async fn assert_degraded(stack: &Stack) {
    let response = stack.get("/mobile/home").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-bff-degraded"], "notifications");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["badge"], Value::Null);
    assert_eq!(body["name"], data::user(42)["displayName"]);
    assert_eq!(body["recentOrders"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn failing_notifications_degrade_the_badge() {
    // Over HTTP/2 a reset tears down the one connection every call shares: the next call after
    // the fault clears must open a new one.
    for protocol in ["http1", "http2"] {
        let stack = mobile().set("defaults.protocol", protocol).start().await;
        for faults in [
            Faults { error_rate: 1.0, ..Faults::default() },
            Faults { malformed: true, ..Faults::default() },
            Faults { reset: true, ..Faults::default() },
            Faults { hang: true, ..Faults::default() },
        ] {
            stack.set_faults(Service::Notifications, faults.clone()).await;
            assert_degraded(&stack).await;
            stack.set_faults(Service::Notifications, Faults::default()).await;
            let healthy = stack.get("/mobile/home").await;
            assert!(healthy.headers().get("x-bff-degraded").is_none(), "{protocol} after {faults:?}");
        }
    }
}

#[tokio::test]
async fn hanging_notifications_cost_at_most_their_timeout() {
    let stack = mobile().set("upstreams.notifications.timeout", "300ms").start().await;
    warm(&stack).await;
    stack.set_faults(Service::Notifications, Faults { hang: true, ..Faults::default() }).await;
    let start = Instant::now();
    assert_degraded(&stack).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1_500), "{elapsed:?}");
}

#[tokio::test]
async fn closed_notifications_port_degrades_the_badge() {
    let closed = closed_port().await;
    let port = closed.port;
    let stack = mobile().set("upstreams.notifications.url", &format!("http://127.0.0.1:{port}")).start().await;
    assert_degraded(&stack).await;
}

#[tokio::test]
async fn failing_users_is_a_502_naming_users() {
    let stack = mobile().start().await;
    stack.set_faults(Service::Users, Faults { error_rate: 1.0, ..Faults::default() }).await;
    let body = problem(stack.get("/mobile/home").await, 502, "UPSTREAM_BAD_STATUS").await;
    assert_eq!(body["service"], "users");
    assert!(body["detail"].as_str().unwrap().contains("users"));
    assert!(!body.to_string().contains("injected failure"), "upstream body leaked: {body}");
}

#[tokio::test]
async fn a_failed_required_part_cancels_the_other_calls() {
    // HTTP/1.1 cancels by closing the connection, HTTP/2 by resetting the stream.
    for protocol in ["http1", "http2"] {
        let stack = mobile().set("defaults.protocol", protocol).start().await;
        warm(&stack).await;
        stack.set_faults(Service::Users, Faults { latency_ms: 50, error_rate: 1.0, ..Faults::default() }).await;
        stack.set_faults(Service::Orders, latency(10_000)).await;
        let start = Instant::now();
        problem(stack.get("/mobile/home").await, 502, "UPSTREAM_BAD_STATUS").await;
        assert!(start.elapsed() < Duration::from_secs(2), "{protocol}: {:?}", start.elapsed());
        assert_eq!(stack.stats(Service::Orders).requests, 1);
        let cancelled =
            eventually(Duration::from_secs(3), || async { stack.stats(Service::Orders).in_flight == 0 }).await;
        assert!(cancelled, "{protocol}: the orders call was not cancelled");
    }
}

#[tokio::test]
async fn hanging_users_is_a_504_at_the_deadline_and_orders_is_cancelled() {
    let stack = mobile().set("routes./mobile/home.deadline", "500ms").start().await;
    warm(&stack).await;
    stack.set_faults(Service::Users, Faults { hang: true, ..Faults::default() }).await;
    stack.set_faults(Service::Orders, latency(10_000)).await;
    let start = Instant::now();
    let body = problem(stack.get("/mobile/home").await, 504, "UPSTREAM_TIMEOUT").await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_500), "deadline plus margin exceeded: {elapsed:?}");
    assert!(body["service"] == "users" || body["service"] == "orders", "{body}");
    let cancelled = eventually(Duration::from_secs(3), || async { stack.stats(Service::Orders).in_flight == 0 }).await;
    assert!(cancelled, "the orders call was not cancelled");
}

async fn assert_refused(stack: &Stack, request: reqwest::RequestBuilder, code: &str) {
    let response = request.send().await.unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().starts_with("Bearer")),
        Some(true)
    );
    problem(response, 401, code).await;
    for service in [Service::Users, Service::Orders, Service::Notifications] {
        assert_eq!(stack.stats(service).requests, 0, "{service} was called");
    }
}

#[tokio::test]
async fn bad_credentials_are_401_and_call_no_upstream() {
    let stack = mobile().start().await;
    warm(&stack).await;
    let url = stack.bff.url("/mobile/home");

    assert_refused(&stack, stack.http.get(&url), "AUTH_REQUIRED").await;
    assert_refused(&stack, stack.http.get(&url).header("authorization", "Basic Zm9vOmJhcg=="), "AUTH_REQUIRED").await;
    assert_refused(&stack, stack.http.get(&url).bearer_auth("not-a-jwt"), "AUTH_MALFORMED").await;

    // Flip one character of the signature.
    let token = stack.token();
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let mut sig: Vec<u8> = signature.bytes().collect();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{rest}.{}", String::from_utf8(sig).unwrap());
    assert_refused(&stack, stack.http.get(&url).bearer_auth(forged), "AUTH_INVALID_SIGNATURE").await;

    let expired = stack.mocks.token("42", "profile", -3600);
    assert_refused(&stack, stack.http.get(&url).bearer_auth(expired), "AUTH_EXPIRED").await;

    // A token with `"alg": "none"` is never accepted.
    let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let payload = token.split('.').nth(1).unwrap();
    assert_refused(&stack, stack.http.get(&url).bearer_auth(format!("{header}.{payload}.")), "AUTH_MALFORMED").await;
}

/// `GET /mobile/home` with a token the auth service issues for `claims`.
async fn home_with_issued_token(stack: &Stack, claims: Value) -> reqwest::Response {
    let auth = stack.mocks.url(Service::Auth);
    let issued = stack.http.post(format!("{auth}/token")).json(&claims).send().await.unwrap();
    let token: Value = issued.json().await.unwrap();
    let bearer = token["access_token"].as_str().unwrap();
    stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(bearer).send().await.unwrap()
}

#[tokio::test]
async fn tokens_from_the_auth_service_work_with_rs256_and_es256() {
    let stack = mobile().start().await;
    for alg in ["RS256", "ES256"] {
        let response =
            home_with_issued_token(&stack, json!({ "sub": "7", "scope": "profile", "ttl_s": 60, "alg": alg })).await;
        assert_eq!(response.status(), 200, "{alg}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["name"], data::user(7)["displayName"], "{alg}");
    }
    // The wrong audience is refused.
    let response = home_with_issued_token(&stack, json!({ "sub": "7", "aud": "other" })).await;
    problem(response, 401, "AUTH_INVALID_CLAIMS").await;
}

#[tokio::test]
async fn the_request_id_reaches_every_upstream() {
    let stack = mobile().start().await;
    let response = stack.get_with_id("/mobile/home", "req-abc-123").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    for service in [Service::Users, Service::Orders, Service::Notifications] {
        let headers = stack.stats(service).last_headers;
        assert_eq!(headers.get("x-request-id").map(String::as_str), Some("req-abc-123"), "{service}");
        // What is left of the 2 s deadline when the call left.
        let left: u64 = headers["x-request-deadline-ms"].parse().unwrap();
        assert!((1..=2_000).contains(&left), "{service}: {left} ms left");
    }
    // Without one, the BFF makes one up and still propagates it.
    let response = stack.get("/mobile/home").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36);
    assert_eq!(stack.stats(Service::Users).last_headers["x-request-id"], generated);
}

#[tokio::test]
async fn upstream_calls_use_the_configured_http_version() {
    // Default HTTP/1.1; `defaults.protocol` switches every upstream, a section overrides it.
    let stack = mobile().set("defaults.protocol", "http2").set("upstreams.orders.protocol", "http1").start().await;
    let response = stack.get_with_id("/mobile/home", "req-h2").await;
    assert_eq!(response.status(), 200);
    for (service, version) in
        [(Service::Users, "HTTP/2.0"), (Service::Notifications, "HTTP/2.0"), (Service::Orders, "HTTP/1.1")]
    {
        let stats = stack.stats(service);
        assert_eq!(stats.last_version, version, "{service}");
        assert_eq!(stats.last_headers.get("x-request-id").map(String::as_str), Some("req-h2"), "{service}");
    }
    let default = mobile().start().await;
    assert_eq!(default.get("/mobile/home").await.status(), 200);
    assert_eq!(default.stats(Service::Users).last_version, "HTTP/1.1");
}

#[tokio::test]
async fn clients_may_speak_http2_without_tls() {
    // A load balancer or mesh in front of the BFF often speaks h2c to it (prior knowledge).
    let stack = mobile().start().await;
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let response = h2c
        .get(stack.bff.url("/mobile/home"))
        .bearer_auth(stack.token())
        .header("x-request-id", "req-h2c-in")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-h2c-in");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], data::user(42)["displayName"]);
    assert_eq!(stack.stats(Service::Users).last_headers["x-request-id"], "req-h2c-in");
    let unauthenticated = h2c.get(stack.bff.url("/mobile/home")).send().await.unwrap();
    problem(unauthenticated, 401, "AUTH_REQUIRED").await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut stack = mobile().start().await;
    warm(&stack).await;
    stack.set_faults(Service::Users, latency(400)).await;
    let request = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token()).send();
    let in_flight = tokio::spawn(request);
    assert!(eventually(Duration::from_secs(5), || async { stack.stats(Service::Users).in_flight == 1 }).await);

    stack.bff.begin_shutdown();
    let response = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], data::user(42)["displayName"]);
    let Stack { bff, .. } = stack;
    tokio::time::timeout(Duration::from_secs(5), bff.stopped()).await.expect("server stops").unwrap();
}

#[tokio::test]
async fn unknown_paths_and_health() {
    let stack = mobile().start().await;
    problem(stack.http.get(stack.bff.url("/nope")).send().await.unwrap(), 404, "NOT_FOUND").await;
    let response = stack.http.post(stack.bff.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    problem(response, 405, "METHOD_NOT_ALLOWED").await;
    // A method a protected route has no handler for is a 405 whoever asks, not a 401.
    let response = stack.http.delete(stack.bff.url("/mobile/home")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    problem(response, 405, "METHOD_NOT_ALLOWED").await;
    let health = stack.http.get(stack.bff.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = stack.http.get(stack.admin.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["users"], "up");
}

#[tokio::test]
async fn metrics_count_requests_and_upstream_calls() {
    let stack = mobile().start().await;
    stack.set_faults(Service::Notifications, Faults { error_rate: 1.0, ..Faults::default() }).await;
    for _ in 0..3 {
        assert_eq!(stack.get("/mobile/home").await.status(), 200);
    }
    assert_eq!(stack.http.get(stack.bff.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(stack.http.get(stack.bff.url("/no/such/route")).send().await.unwrap().status(), 404);
    let response = stack.http.get(stack.admin.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    // The recorder is process-wide and tests run in parallel: assert lower bounds on our series.
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        value("bff_http_requests_total", &["route=\"/mobile/home\"", "status=\"200\"", "method=\"GET\""]) >= 3.0,
        "{text}"
    );
    assert!(value("bff_upstream_requests_total", &["upstream=\"users\"", "outcome=\"ok\""]) >= 3.0, "{text}");
    assert!(
        value("bff_upstream_requests_total", &["upstream=\"notifications\"", "outcome=\"status\""]) >= 3.0,
        "{text}"
    );
    assert!(value("bff_degraded_total", &["upstream=\"notifications\""]) >= 3.0, "{text}");
    assert!(
        value("bff_http_request_duration_seconds_bucket", &["route=\"/mobile/home\"", "le=\"+Inf\""]) >= 3.0,
        "{text}"
    );
    // The gateway's own routes are labelled by pattern too; a path no route matches is `unmatched`.
    assert!(value("bff_http_requests_total", &["route=\"/healthz\"", "status=\"200\""]) >= 1.0, "{text}");
    assert!(value("bff_http_requests_total", &["route=\"unmatched\"", "status=\"404\""]) >= 1.0, "{text}");
    // Ids never become labels.
    assert!(!text.contains("/mobile/orders/4"), "{text}");
    assert!(!text.contains("/no/such/route"), "{text}");
}

#[tokio::test]
async fn readyz_reports_a_down_upstream() {
    let closed = closed_port().await;
    let port = closed.port;
    let stack = mobile().set("upstreams.orders.url", &format!("http://127.0.0.1:{port}")).start().await;
    let ready = stack.http.get(stack.admin.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["orders"], "down");
    assert_eq!(body["upstreams"]["users"], "up");
}

/// A required part that fails ends the request at once; the sibling calls it abandons finish in
/// the background, so their HTTP/1.1 connections go back to the pool instead of being closed.
#[tokio::test]
async fn a_failed_required_part_does_not_cost_its_siblings_their_connections() {
    let stack = mobile().start().await;
    warm(&stack).await;
    stack.set_faults(Service::Users, Faults { error_rate: 1.0, ..Faults::default() }).await;
    stack.set_faults(Service::Orders, latency(150)).await;
    for round in 1..=8 {
        problem(stack.get("/mobile/home").await, 502, "UPSTREAM_BAD_STATUS").await;
        // The abandoned orders call is still running; once it is done its connection is idle.
        let finished = eventually(Duration::from_secs(10), || async {
            let orders = stack.stats(Service::Orders);
            orders.in_flight == 0 && orders.requests == round
        })
        .await;
        assert!(finished, "round {round}: the abandoned call did not finish");
    }
    let opened = stack.stats(Service::Orders).connections;
    assert!(opened <= 1, "{opened} new connections to orders over 8 failed requests");
}

/// The bulkhead: with one call in flight allowed per upstream, a second request's call to the
/// busy upstream fails at once instead of queueing.
#[tokio::test]
async fn over_the_bulkhead_a_required_call_fails_at_once_as_503() {
    let stack = mobile().set("defaults.max_in_flight", "1").start().await;
    stack.set_faults(Service::Users, latency(500)).await;
    let first = tokio::spawn({
        let request = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token());
        request.send()
    });
    assert!(eventually(Duration::from_secs(5), || async { stack.stats(Service::Users).in_flight == 1 }).await);
    // Refused, not queued: a queued call would have waited for the first and answered 200.
    let body = problem(stack.get("/mobile/home").await, 503, "UPSTREAM_OVERLOADED").await;
    assert_eq!(body["service"], "users");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(stack.stats(Service::Users).requests, 1);
}
