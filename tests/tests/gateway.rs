//! The gateway around any BFF's routes: what a new BFF gets without writing it.

use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::routing::get;
use bff_core::testing::TestServer;
use bff_core::{Access, Gateway, Routes};
use serde_json::Value;

/// A gateway with the smallest config: no upstreams, no auth, no shaping.
async fn gateway() -> Gateway {
    bff_core::install_crypto_provider();
    let source = ConfigSource { name: "test".into(), text: "listen = \"127.0.0.1:0\"\n".into() };
    Gateway::builder(load(&source, &Overrides::default()).unwrap()).build().await.unwrap()
}

/// `routes` behind the smallest gateway, and its admin router.
async fn serve(routes: Routes) -> (TestServer, TestServer, reqwest::Client) {
    let gateway = gateway().await;
    let server = TestServer::start(gateway.router(routes).unwrap()).await;
    let admin = TestServer::start(gateway.admin_router()).await;
    (server, admin, reqwest::Client::builder().no_proxy().build().unwrap())
}

async fn panics() -> &'static str {
    panic!("a bug in a handler")
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_lives_on() {
    let routes = Routes::new().route("/boom", get(panics), Access::public()).route(
        "/fine",
        get(|| async { "fine" }),
        Access::public(),
    );
    let (server, _, http) = serve(routes).await;

    let response = http.get(server.url("/boom")).header("x-request-id", "boom-1").send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["x-request-id"], "boom-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INTERNAL_ERROR");
    assert_eq!(body["request_id"], "boom-1");
    assert!(!body.to_string().contains("a bug in a handler"), "internal detail leaked: {body}");

    let fine = http.get(server.url("/fine")).send().await.unwrap();
    assert_eq!(fine.text().await.unwrap(), "fine");
}

#[tokio::test]
async fn without_an_auth_section_no_route_sees_an_identity() {
    let me = get(|user: bff_core::Identity| async move { user.subject().to_owned() });
    let (server, _, http) = serve(Routes::new().route("/me", me.clone(), Access::public())).await;
    // A client-supplied identity header is never trusted.
    let response = http.get(server.url("/me")).header("x-user-id", "42").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "AUTH_REQUIRED");
    // A route that needs a caller cannot be served without a way to authenticate one.
    let error = gateway().await.router(Routes::new().route("/me", me, Access::authenticated())).unwrap_err();
    assert!(error.to_string().contains("neither `auth` nor `api_keys`"), "{error}");
}

#[tokio::test]
async fn a_path_declared_twice_with_different_access_is_refused() {
    let routes = Routes::new().route("/thing", get(|| async { "read" }), Access::public()).route(
        "/thing",
        bff_core::routing::post(|| async { "write" }),
        Access::scope("things"),
    );
    let error = gateway().await.router(routes).unwrap_err();
    assert!(error.to_string().contains("`/thing` is declared twice"), "{error}");
}

#[tokio::test]
async fn metrics_and_readiness_are_on_the_admin_router_only() {
    let (server, admin, http) = serve(Routes::new().route("/a", get(|| async { "a" }), Access::public())).await;
    for path in ["/metrics", "/readyz"] {
        assert_eq!(http.get(server.url(path)).send().await.unwrap().status(), 404, "{path}");
        assert_eq!(http.get(admin.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    for server in [&server, &admin] {
        assert_eq!(http.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn two_gateways_in_one_process_keep_their_metrics_apart() {
    let (a, a_admin, http) = serve(Routes::new().route("/a", get(|| async { "a" }), Access::public())).await;
    let (b, b_admin, _) = serve(Routes::new().route("/b", get(|| async { "b" }), Access::public())).await;
    assert_eq!(http.get(a.url("/a")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(b.url("/b")).send().await.unwrap().status(), 200);
    let metrics = |server: &TestServer| {
        let url = server.url("/metrics");
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let (text_a, text_b) = (metrics(&a_admin).await, metrics(&b_admin).await);
    assert!(text_a.contains(r#"bff_http_requests_total{route="/a",method="GET",status="200"} 1"#), "{text_a}");
    assert!(!text_a.contains(r#"route="/b""#), "gateway a shows b's series: {text_a}");
    assert!(text_b.contains(r#"bff_http_requests_total{route="/b",method="GET",status="200"} 1"#), "{text_b}");
    assert!(!text_b.contains(r#"route="/a""#), "gateway b shows a's series: {text_b}");
}

#[tokio::test]
async fn a_route_key_that_names_no_route_stops_the_bff_naming_it() {
    let load_with = |key: &str| {
        let mut overrides = Overrides::default();
        overrides.set(format!("routes.{key}.deadline"), "1s", "test");
        let source = ConfigSource { name: "config/mobile.toml".into(), text: bff_demo::MOBILE_CONFIG.into() };
        load(&source, &overrides).unwrap()
    };
    let build = |config| async move { Gateway::builder(config).source("config/mobile.toml").build().await.unwrap() };

    let gateway = build(load_with("/mobile/hom")).await;
    let error = bff_mobile::app(&gateway).unwrap_err();
    assert_eq!(error.key.as_deref(), Some(r#"routes."/mobile/hom""#));
    assert_eq!(error.source, "config/mobile.toml");
    let gateway = build(load_with("/mobile/orders/{order}")).await;
    let error = bff_mobile::app(&gateway).unwrap_err();
    assert!(error.to_string().contains("/mobile/orders/{id}"), "the message names the route it matched: {error}");
    // The right patterns, a POST-only one included, are accepted.
    for key in ["/mobile/home", "/mobile/orders/{id}", "/mobile/orders"] {
        assert!(bff_mobile::app(&build(load_with(key)).await).is_ok(), "{key}");
    }
}
