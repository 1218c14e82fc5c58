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

#[derive(serde::Deserialize)]
struct Wanted {
    #[allow(dead_code)]
    user: u64,
}

/// A refusal in plain text, axum's extractors' or a handler's own, reaches the client as a problem
/// document like every other, its other headers kept; a 5xx's text stays in the log; an answer
/// of the handler's own type is left as it is.
#[tokio::test]
async fn a_handlers_refusal_in_plain_text_is_a_problem() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let routes = Routes::new()
        .route("/query", get(|_: axum::extract::Query<Wanted>| async { "ok" }), Access::public())
        .route("/json", bff_core::routing::post(|_: axum::Json<Wanted>| async { "ok" }), Access::public())
        .route(
            "/taken",
            get(|| async { (StatusCode::CONFLICT, [("retry-after", "5")], "that name is taken") }),
            Access::public(),
        )
        .route("/bare", get(|| async { StatusCode::FORBIDDEN }), Access::public())
        .route("/down", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "db at 10.0.0.7 is down") }), Access::public())
        .route(
            "/own",
            get(|| async { (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"mine": true}))).into_response() }),
            Access::public(),
        )
        .route(
            "/page",
            get(|| async { (StatusCode::NOT_FOUND, axum::response::Html("<p>gone</p>")) }),
            Access::public(),
        );
    let (server, _, http) = serve(routes).await;
    let problem = |path: &'static str| {
        let request = match path {
            "/json" => http.post(server.url(path)).header("content-type", "application/json").body("{}"),
            _ => http.get(server.url(path)),
        };
        async move {
            let response = request.header("x-request-id", "r-1").send().await.unwrap();
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            assert_eq!(headers["content-type"], "application/problem+json", "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!((body["status"].as_u64(), body["request_id"].as_str()), (Some(u64::from(status)), Some("r-1")));
            (status, headers, body)
        }
    };
    let (status, _, body) = problem("/query").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("BAD_REQUEST")));
    assert!(body["detail"].as_str().unwrap().contains("missing field `user`"), "{body}");
    let (status, _, body) = problem("/json").await;
    assert_eq!((status, body["code"].as_str()), (422, Some("UNPROCESSABLE_CONTENT")));
    assert!(body["detail"].as_str().unwrap().contains("user"), "{body}");
    let (status, headers, body) = problem("/taken").await;
    assert_eq!(
        (status, body["code"].as_str(), body["detail"].as_str()),
        (409, Some("CONFLICT"), Some("that name is taken"))
    );
    assert_eq!(headers["retry-after"], "5");
    let (status, _, body) = problem("/bare").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, _, body) = problem("/down").await;
    assert_eq!((status, body["code"].as_str()), (503, Some("UNAVAILABLE")));
    assert!(!body.to_string().contains("10.0.0.7"), "internal detail leaked: {body}");
    // The handler's own types.
    let own = http.get(server.url("/own")).send().await.unwrap();
    assert_eq!((own.status().as_u16(), own.text().await.unwrap()), (400, r#"{"mine":true}"#.to_owned()));
    let page = http.get(server.url("/page")).send().await.unwrap();
    assert_eq!((page.status().as_u16(), page.text().await.unwrap()), (404, "<p>gone</p>".to_owned()));
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
