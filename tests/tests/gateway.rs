//! The gateway around any BFF's routes: what a new BFF gets without writing it.

use axum::Router;
use axum::routing::get;
use bff_core::Gateway;
use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::testing::TestServer;
use serde_json::Value;

/// `routes` behind a gateway with the smallest config: no upstreams, no auth, no shaping.
async fn serve(routes: Router) -> (TestServer, reqwest::Client) {
    bff_core::install_crypto_provider();
    let source = ConfigSource { name: "test".into(), text: "listen = \"127.0.0.1:0\"\n".into() };
    let gateway = Gateway::builder(load(&source, &Overrides::default()).unwrap()).build().await.unwrap();
    let server = TestServer::start(gateway.router(routes)).await;
    (server, reqwest::Client::builder().no_proxy().build().unwrap())
}

async fn panics() -> &'static str {
    panic!("a bug in a handler")
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_lives_on() {
    let routes = Router::new().route("/boom", get(panics)).route("/fine", get(|| async { "fine" }));
    let (server, http) = serve(routes).await;

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
    let routes = Router::new().route("/me", get(|user: bff_core::Identity| async move { user.subject().to_owned() }));
    let (server, http) = serve(routes).await;
    // A client-supplied identity header is never trusted.
    let response = http.get(server.url("/me")).header("x-user-id", "42").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "AUTH_REQUIRED");
}
