//! The web BFF: rich pages, the dependent fan-out under one deadline, and CORS.

mod common;

use std::time::{Duration, Instant};

use common::{StackBuilder, latency, problem};
use serde_json::{Value, json};
use services_mock::{Service, data};

fn web() -> StackBuilder {
    StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app)
}

/// The user record as the web app sees it: everything but the partner account it belongs to.
fn profile(id: u64) -> Value {
    let mut user = data::user(id);
    user.as_object_mut().unwrap().remove("account");
    user
}

fn card(sku: &str) -> Value {
    let p = data::product(data::sku_index(sku).unwrap());
    json!({ "sku": p["sku"], "name": p["name"], "price": p["price"], "currency": p["currency"], "imageUrl": p["imageUrl"] })
}

#[tokio::test]
async fn home_carries_full_objects() {
    let stack = web().start().await;
    let response = stack.get("/web/home").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-bff-degraded").is_none());
    let body: Value = response.json().await.unwrap();

    let orders = data::orders(42, bff_web::LATEST);
    let mut skus: Vec<String> = Vec::new();
    for item in orders.iter().flat_map(|o| o["items"].as_array().unwrap()) {
        let sku = item["sku"].as_str().unwrap().to_owned();
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    let expected = json!({
        "profile": profile(42),
        "orders": orders,
        "notifications": data::notifications(42, bff_web::LATEST),
        "products": skus.iter().map(|s| card(s)).collect::<Vec<_>>(),
    });
    assert_eq!(body, expected);
    // Rich: the address and every order's items are there.
    assert!(body["profile"]["address"]["city"].is_string());
    assert!(body["orders"].as_array().unwrap().iter().all(|o| !o["items"].as_array().unwrap().is_empty()));
    assert_eq!(stack.stats(Service::Catalog).requests, 1, "one batch call for all products");
}

#[tokio::test]
async fn a_slow_catalog_degrades_products_inside_the_deadline() {
    // Without the catalog cache of the shipped config: the first answer would be served from it.
    let stack = web().set("routes./web/home.deadline", "600ms").set("upstreams.catalog.cache_bytes", "0").start().await;
    assert_eq!(stack.get("/web/home").await.status(), 200);
    stack.set_faults(Service::Orders, latency(200)).await;
    stack.set_faults(Service::Catalog, latency(5_000)).await;
    let start = Instant::now();
    let response = stack.get("/web/home").await;
    let elapsed = start.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-bff-degraded"], "catalog");
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_600), "the deadline was not kept: {elapsed:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["products"], Value::Null);
    assert_eq!(body["orders"], json!(data::orders(42, bff_web::LATEST)));
    assert_eq!(body["profile"], profile(42));
}

#[tokio::test]
async fn product_page_with_related_products() {
    let stack = web().start().await;
    let body: Value = stack.get("/web/products/SKU-0007").await.json().await.unwrap();
    let product = data::product(7);
    let related: Vec<Value> =
        product["related"].as_array().unwrap().iter().map(|s| card(s.as_str().unwrap())).collect();
    let expected = json!({
        "product": product,
        "stock": data::stock(7).as_object().unwrap().iter().filter(|(k, _)| *k != "sku").map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
        "reviews": { "averageRating": data::reviews(7, 5)["averageRating"], "count": data::reviews(7, 5)["count"], "reviews": data::reviews(7, bff_web::REVIEWS_PAGE)["reviews"] },
        "related": related,
    });
    assert_eq!(body, expected);
    assert_eq!(stack.stats(Service::Catalog).requests, 2, "the product, then one batch for the related ones");
    problem(stack.get("/web/products/SKU-0404").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn cors_preflight_for_allowed_and_other_origins() {
    let stack = web().start().await;
    let url = stack.bff.url("/web/home");
    let preflight = |origin: &'static str| {
        stack
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    // The route's own methods, not every method the gateway knows.
    assert_eq!(h["access-control-allow-methods"], "GET,HEAD");

    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert!(other.headers().get("access-control-allow-credentials").is_none());

    // A browser write may send its JSON body and an Idempotency-Key.
    let write = stack
        .http
        .request(reqwest::Method::OPTIONS, stack.bff.url("/web/notifications/read"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,idempotency-key")
        .send()
        .await
        .unwrap();
    let allowed_headers = write.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(
        allowed_headers.contains("idempotency-key") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    assert_eq!(write.headers()["access-control-allow-methods"], "POST");

    // The actual request from the allowed origin can read the response and its headers.
    let response =
        stack.http.get(&url).bearer_auth(stack.token()).header("origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:3000");
    assert!(response.headers()["access-control-expose-headers"].to_str().unwrap().contains("x-request-id"));

    // An `OPTIONS` that is no preflight is routed as any method: refused with the route's
    // methods, or not found; from an allowed origin, it can read that answer.
    let options = |path: &str, origin: Option<&'static str>| {
        let request = stack.http.request(reqwest::Method::OPTIONS, stack.bff.url(path));
        let request = match origin {
            Some(origin) => request.header("origin", origin),
            None => request,
        };
        request.send()
    };
    for origin in [None, Some("http://localhost:3000")] {
        let home = options("/web/home", origin).await.unwrap();
        assert_eq!(home.status(), 405, "from {origin:?}");
        // Written one way, whichever kind of route answers.
        let allow = |response: &reqwest::Response| response.headers()["allow"].to_str().unwrap().to_owned();
        assert_eq!(allow(&home), "GET,HEAD", "from {origin:?}");
        let products = options("/api/catalog/products/SKU-0001", origin).await.unwrap();
        assert_eq!(products.status(), 405, "a passthrough route, from {origin:?}");
        assert_eq!(allow(&products), "GET,HEAD", "from {origin:?}");
        assert_eq!(options("/web/nothing-here", origin).await.unwrap().status(), 404, "from {origin:?}");
        let cors = home.headers().get("access-control-allow-origin");
        assert_eq!(cors.is_some(), origin.is_some(), "from {origin:?}");
    }
}

/// The web app's own files go out in gzip to a browser that takes it, as they are to one that
/// does not, and each answer says it varies by `Accept-Encoding`.
#[tokio::test]
async fn the_web_apps_files_go_out_in_gzip_when_taken() {
    let stack = web().start().await;
    for path in ["/", "/app.js", "/app.css"] {
        let fetch = |coding: &'static str| stack.http.get(stack.bff.url(path)).header("accept-encoding", coding).send();
        let plain = fetch("identity").await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        assert!(plain.headers().get_all("vary").iter().any(|v| v == "accept-encoding"), "{path}");
        let plain = plain.bytes().await.unwrap();
        let gzip = fetch("gzip, deflate, br").await.unwrap();
        assert_eq!(gzip.headers()["content-encoding"], "gzip", "{path}");
        let sent = gzip.bytes().await.unwrap();
        assert!(sent.len() < plain.len() / 2, "{path}: {} of {} bytes", sent.len(), plain.len());
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&sent[..]), &mut decoded).unwrap();
        assert_eq!(decoded, plain, "{path}");
    }
}
