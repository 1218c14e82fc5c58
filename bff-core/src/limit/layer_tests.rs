//! The limits layer over a router, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use tower::ServiceExt;

use super::Limits;
use super::layer::{Enforce, Stage};
use crate::config::Config;
use crate::middleware::MiddlewareLayer;
use crate::observe::metrics::Metrics;
use crate::policy::api_key::ApiClient;
use crate::policy::auth::Identity;
use crate::request::RequestMeta;
use crate::routes::{Access, Route};

/// `/r` behind the limits of `config`, with the caller taken from `x-user` (an identity) or
/// `x-client` (an API client of that tier) as the credentials layer would.
async fn router(config: &str) -> (Router, Metrics) {
    let config: Config = toml::from_str(&format!("listen = \"127.0.0.1:0\"\n{config}")).expect("config");
    let metrics = Metrics::new();
    let limits = Limits::new(&config, &metrics).await.expect("limits").expect("some limits");
    let by_caller = Enforce::new(&limits, Stage::Caller, ["/r"], &metrics).map(MiddlewareLayer);
    let by_address = Enforce::new(&limits, Stage::Anonymous, ["/r"], &metrics).map(MiddlewareLayer);
    let layers = tower::ServiceBuilder::new().option_layer(by_address).option_layer(by_caller);
    let router = Router::new().route("/r", get(|| async { "ok" })).route_layer(layers).route_layer(
        axum::middleware::map_request(|mut request: Request| async move {
            // As the gateway's dispatch would have found it.
            let meta = RequestMeta::detached(Duration::from_secs(1), 1);
            let route = Route {
                pattern: "/r".into(),
                access: Access::authenticated(),
                deadline: None,
                max_body_bytes: None,
                shaped: false,
            };
            let _ = meta.policy.set(Arc::new(route));
            request.extensions_mut().insert(Arc::new(meta));
            let header = |request: &Request, name: &str| {
                request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            if let Some(user) = header(&request, "x-user") {
                let mut identity = Identity::new(user, ["profile"]);
                if let Some(tenant) = header(&request, "x-tenant") {
                    identity = identity.with_claim("tenant", tenant);
                }
                request.extensions_mut().insert(identity);
            }
            if let Some(name) = header(&request, "x-client") {
                let client = ApiClient::for_tests(&name, &name);
                request.extensions_mut().insert(client);
            }
            request
        }),
    );
    (router, metrics)
}

async fn get_as(router: &Router, header: &str, who: &str) -> Response {
    let request = Request::builder().uri("/r").header(header, who).body(Body::empty()).unwrap();
    router.clone().oneshot(request).await.unwrap()
}

/// The count of `bff_rate_limit_requests_total` on `/r` for `limit` and `outcome`, as rendered.
fn counted(text: &str, limit: &str, outcome: &str) -> Option<String> {
    let prefix = format!("bff_rate_limit_requests_total{{route=\"/r\",limit=\"{limit}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
}

fn field(response: &Response, name: &str) -> String {
    let values: Vec<&str> = response.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    values.join(", ")
}

#[tokio::test(start_paused = true)]
async fn a_user_over_the_limit_is_told_when_to_come_back() {
    let (router, metrics) = router(
        r#"
        [rate_limits.per-user]
        key = "user"
        rate = 2
        per = "10s"
        "#,
    )
    .await;
    let first = get_as(&router, "x-user", "alice").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(field(&first, "ratelimit-policy"), r#""per-user";q=2;w=10"#);
    assert_eq!(field(&first, "ratelimit"), r#""per-user";r=1;t=5"#);
    let second = get_as(&router, "x-user", "alice").await;
    assert_eq!(field(&second, "ratelimit"), r#""per-user";r=0;t=10"#);

    let refused = get_as(&router, "x-user", "alice").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&refused, "retry-after"), "5");
    assert_eq!(field(&refused, "ratelimit-policy"), r#""per-user";q=2;w=10"#);
    assert_eq!(field(&refused, "ratelimit"), r#""per-user";r=0;t=10"#);
    let body = axum::body::to_bytes(refused.into_body(), 4096).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "RATE_LIMITED");

    // Another user has a bucket of its own.
    assert_eq!(get_as(&router, "x-user", "bob").await.status(), StatusCode::OK);

    // Just before the share comes back: still refused; at it: let through.
    tokio::time::advance(Duration::from_millis(4_900)).await;
    assert_eq!(get_as(&router, "x-user", "alice").await.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(get_as(&router, "x-user", "alice").await.status(), StatusCode::OK);

    let text = metrics.render();
    let count = |outcome: &str| counted(&text, "per-user", outcome);
    assert_eq!(count("allowed").as_deref(), Some("4"), "{text}");
    assert_eq!(count("limited").as_deref(), Some("2"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn several_limits_apply_and_the_tightest_refuses() {
    let (router, _) = router(
        r#"
        [rate_limits.per-user]
        key = "user"
        rate = 100
        per = "1m"
        burst = 10
        [rate_limits.everyone]
        key = "global"
        rate = 3
        per = "1h"
        "#,
    )
    .await;
    for user in ["a", "b", "c"] {
        let response = get_as(&router, "x-user", user).await;
        assert_eq!(response.status(), StatusCode::OK);
        // One field line per layer: the caller's limits, then the address's.
        assert_eq!(field(&response, "ratelimit-policy"), r#""per-user";q=10;w=6, "everyone";q=3;w=3600"#);
        assert_eq!(field(&response, "ratelimit").split(", ").next(), Some(r#""per-user";r=9;t=1"#));
    }
    // The global limit is spent: refused before the caller's own limit is counted.
    let refused = get_as(&router, "x-user", "d").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&refused, "retry-after"), "1200");
    assert_eq!(field(&refused, "ratelimit"), r#""everyone";r=0;t=3600"#);
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_is_refused_until_its_window_ends() {
    let (router, metrics) = router(
        r#"
        [api_keys.clients.free]
        tier = "free"
        key_sha256 = "9f8cfdb17116bf0e2a44e071454f25594cb9b8737bf331e6a2f0b30550572f29"
        account = "demo"
        [api_keys.clients.pro]
        tier = "pro"
        key_sha256 = "1fbfd5e2a34698deb796eb78add256a067ec065519b8329b1eb85f5e2ef906d4"
        account = "demo"
        [quotas.free]
        requests = 2
        per = "1h"
        [quotas.pro]
        requests = 1000
        per = "1h"
        "#,
    )
    .await;
    let first = get_as(&router, "x-client", "free").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(field(&first, "ratelimit-policy"), r#""quota";q=1000;w=3600"#.replace("1000", "2"));
    assert!(field(&first, "ratelimit").starts_with(r#""quota";r=1;t="#));
    assert_eq!(get_as(&router, "x-client", "free").await.status(), StatusCode::OK);
    let spent = get_as(&router, "x-client", "free").await;
    assert_eq!(spent.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = field(&spent, "retry-after").parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    let body = axum::body::to_bytes(spent.into_body(), 4096).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "QUOTA_EXCEEDED");
    assert!(problem["detail"].as_str().unwrap().contains("resets at 20"), "{problem}");
    // The pro tier is far from its quota.
    for _ in 0..5 {
        assert_eq!(get_as(&router, "x-client", "pro").await.status(), StatusCode::OK);
    }
    tokio::time::advance(Duration::from_secs(wait)).await;
    assert_eq!(get_as(&router, "x-client", "free").await.status(), StatusCode::OK);
    assert!(metrics.render().contains("bff_quota_requests_total{tier=\"free\",outcome=\"exceeded\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_claim_key_counts_every_user_of_a_tenant_together() {
    let (router, _) = router(
        r#"
        [rate_limits.per-tenant]
        key = "claim:tenant"
        rate = 2
        per = "1m"
        "#,
    )
    .await;
    let as_tenant = |user: &'static str, tenant: &'static str| {
        let request = Request::builder().uri("/r").header("x-user", user).header("x-tenant", tenant);
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    assert_eq!(as_tenant("alice", "acme").await.unwrap().status(), StatusCode::OK);
    assert_eq!(as_tenant("bob", "acme").await.unwrap().status(), StatusCode::OK);
    assert_eq!(as_tenant("carol", "acme").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(as_tenant("carol", "globex").await.unwrap().status(), StatusCode::OK);
    // A token without the claim is not counted by this limit, and is not told about it.
    for _ in 0..3 {
        let response = get_as(&router, "x-user", "dave").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("ratelimit").is_none());
    }
}

async fn problem_of(response: Response) -> serde_json::Value {
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn code_of(response: Response) -> String {
    problem_of(response).await["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_user_has_at_most_max_in_flight_requests_until_their_bodies_end() {
    let (router, metrics) = router(
        r#"
        [concurrency_limits.per-user]
        key = "user"
        max_in_flight = 2
        "#,
    )
    .await;
    // A response whose body has not been sent holds its place.
    let first = get_as(&router, "x-user", "alice").await;
    let second = get_as(&router, "x-user", "alice").await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let refused = get_as(&router, "x-user", "alice").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&refused, "retry-after"), "1");
    assert_eq!(field(&refused, "ratelimit"), "", "a concurrency limit has no window to tell");
    let problem = problem_of(refused).await;
    assert_eq!(problem["code"], "CONCURRENCY_LIMITED");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`per-user` allows 2 requests in flight at once per `user`"), "{detail}");
    // Another user counts apart.
    assert_eq!(get_as(&router, "x-user", "bob").await.status(), StatusCode::OK);
    let gauge = r#"bff_concurrency_in_flight{limit="per-user"} "#;
    let in_flight = |metrics: &Metrics| metrics.render().lines().find_map(|l| Some(l.strip_prefix(gauge)?.to_owned()));
    assert_eq!(in_flight(&metrics).as_deref(), Some("2"), "alice's two (bob's answer is gone)");

    // A body sent to its end gives its place back (the response itself is still held here).
    let mut first = first;
    let body = std::mem::replace(first.body_mut(), Body::empty());
    assert_eq!(axum::body::to_bytes(body, 64).await.unwrap(), "ok");
    let third = get_as(&router, "x-user", "alice").await;
    assert_eq!(third.status(), StatusCode::OK);
    // A client that goes away (its response dropped) gives it back too.
    drop((second, third));
    assert_eq!(get_as(&router, "x-user", "alice").await.status(), StatusCode::OK);
    assert_eq!(in_flight(&metrics).as_deref(), Some("0"));

    let text = metrics.render();
    let count = |outcome: &str| counted(&text, "per-user", outcome);
    assert_eq!(count("allowed").as_deref(), Some("5"), "{text}");
    assert_eq!(count("limited").as_deref(), Some("1"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_a_concurrency_limit_spends_nothing_of_its_rate_limits() {
    let (router, _) = router(
        r#"
        [concurrency_limits.one-at-a-time]
        key = "user"
        max_in_flight = 1

        [rate_limits.per-user]
        key = "user"
        rate = 2
        per = "1h"
        "#,
    )
    .await;
    let first = get_as(&router, "x-user", "alice").await;
    for _ in 0..5 {
        let refused = get_as(&router, "x-user", "alice").await;
        assert_eq!(code_of(refused).await, "CONCURRENCY_LIMITED");
    }
    drop(first);
    let second = get_as(&router, "x-user", "alice").await;
    assert_eq!(second.status(), StatusCode::OK, "the five refused spent none of the two");
    assert_eq!(field(&second, "ratelimit"), r#""per-user";r=0;t=3600"#);
    drop(second);
    // Refused by the rate limit: its place under the concurrency limit is given back at once.
    assert_eq!(code_of(get_as(&router, "x-user", "alice").await).await, "RATE_LIMITED");
    assert_eq!(code_of(get_as(&router, "x-user", "alice").await).await, "RATE_LIMITED");
}

#[tokio::test(start_paused = true)]
async fn a_global_concurrency_limit_counts_everyone_and_an_address_limit_each_address() {
    let (router, _) = router(
        r#"
        [concurrency_limits.everyone]
        key = "global"
        max_in_flight = 3

        [concurrency_limits.per-ip]
        key = "ip"
        max_in_flight = 2
        "#,
    )
    .await;
    let from = |ip: &str| {
        let mut request = Request::builder().uri("/r").body(Body::empty()).unwrap();
        let peer: std::net::SocketAddr = format!("{ip}:4000").parse().unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        router.clone().oneshot(request)
    };
    let a1 = from("192.0.2.1").await.unwrap();
    let a2 = from("192.0.2.1").await.unwrap();
    assert_eq!(code_of(from("192.0.2.1").await.unwrap()).await, "CONCURRENCY_LIMITED");
    let b1 = from("192.0.2.2").await.unwrap();
    assert_eq!([a1.status(), a2.status(), b1.status()], [StatusCode::OK; 3]);
    // Three in flight: everyone's limit is full, even for an address with none.
    let problem = problem_of(from("192.0.2.3").await.unwrap()).await;
    assert_eq!(problem["code"], "CONCURRENCY_LIMITED");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`everyone` allows 3 requests in flight at once from everyone together"), "{detail}");
    drop(a1);
    assert_eq!(from("192.0.2.3").await.unwrap().status(), StatusCode::OK);
}
