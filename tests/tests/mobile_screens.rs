//! The mobile BFF's screens and its shaping layers: fields=, ETag/304, gzip and brotli.

mod common;

use std::io::Read;

use common::{StackBuilder, latency, problem};
use serde_json::{Value, json};
use services_mock::{Faults, Service, data};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

#[tokio::test]
async fn order_detail_is_flat_and_owned_by_the_caller() {
    let stack = mobile().start().await;
    let newest = data::order(42, data::order_count(42));
    let response = stack.get(&format!("/mobile/orders/{}", newest["id"])).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let item_count: u64 = newest["items"].as_array().unwrap().iter().map(|i| i["quantity"].as_u64().unwrap()).sum();
    assert_eq!(
        body,
        json!({
            "id": newest["id"], "status": newest["status"], "total": newest["total"],
            "itemCount": item_count, "placedAt": newest["placedAt"],
        })
    );
    // Another user's order and an unknown id are both simply not found.
    problem(stack.get("/mobile/orders/4301").await, 404, "NOT_FOUND").await;
    problem(stack.get("/mobile/orders/999999").await, 404, "NOT_FOUND").await;
    problem(stack.get("/mobile/orders/..%2F..%2Fusers%2F42").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn product_detail_joins_three_services() {
    let stack = mobile().start().await;
    let body: Value = stack.get("/mobile/products/SKU-0007").await.json().await.unwrap();
    let product = data::product(7);
    assert_eq!(
        body,
        json!({
            "sku": "SKU-0007", "name": product["name"], "price": product["price"],
            "inStock": data::stock(7)["inStock"], "rating": data::reviews(7, 1)["averageRating"],
        })
    );
    problem(stack.get("/mobile/products/SKU-9999").await, 404, "NOT_FOUND").await;

    stack.set_faults(Service::Inventory, Faults { error_rate: 1.0, ..Faults::default() }).await;
    stack.set_faults(Service::Reviews, Faults { hang: true, ..Faults::default() }).await;
    let response = stack.get("/mobile/products/SKU-0007").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-bff-degraded"], "inventory, reviews");
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["inStock"].clone(), body["rating"].clone()), (Value::Null, Value::Null));
    assert_eq!(body["name"], product["name"]);
}

#[tokio::test]
async fn feed_uses_one_batch_call_and_leaves_out_unknown_skus() {
    let stack = mobile().start().await;
    let response = stack.get("/mobile/feed?skus=SKU-0003,SKU-9999,SKU-0001").await;
    assert_eq!(response.status(), 200);
    let degraded = response.headers()["x-bff-degraded"].to_str().unwrap().to_owned();
    assert!(degraded.split(", ").any(|l| l == "catalog:SKU-9999"), "{degraded}");
    let body: Value = response.json().await.unwrap();
    let card = |i: u64| {
        let p = data::product(i);
        json!({ "sku": p["sku"], "name": p["name"], "price": p["price"], "inStock": data::stock(i)["inStock"] })
    };
    assert_eq!(body, json!({ "cards": [card(3), card(1)] }));
    assert_eq!(stack.stats(Service::Catalog).requests, 1, "one batch call");
    problem(stack.get("/mobile/feed").await, 400, "INVALID_QUERY").await;
}

#[tokio::test]
async fn feed_respects_the_concurrency_cap() {
    let stack = mobile().set("defaults.concurrency", "4").start().await;
    stack.set_faults(Service::Inventory, latency(30)).await;
    let skus: Vec<String> = (1..=20).map(data::sku).collect();
    let response = stack.get(&format!("/mobile/feed?skus={}", skus.join(","))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cards"].as_array().unwrap().len(), 20);
    let stats = stack.stats(Service::Inventory);
    assert_eq!(stats.requests, 20);
    assert_eq!(stats.max_in_flight, 4, "the cap is both reached and respected");
}

#[tokio::test]
async fn home_fits_the_mobile_budget() {
    let stack = mobile().start().await;
    let body = stack.get("/mobile/home").await.bytes().await.unwrap();
    assert!(body.len() <= 512, "{} bytes", body.len());
}

#[tokio::test]
async fn sparse_fieldsets() {
    let stack = mobile().start().await;
    let body: Value = stack.get("/mobile/home?fields=name,badge").await.json().await.unwrap();
    assert_eq!(body, json!({ "name": data::user(42)["displayName"], "badge": data::unread_count(42) }));

    let body: Value = stack.get("/mobile/home?fields=recentOrders.id").await.json().await.unwrap();
    let ids: Vec<Value> = data::orders(42, 3).iter().map(|o| json!({ "id": o["id"] })).collect();
    assert_eq!(body, json!({ "recentOrders": ids }));

    let body: Value = stack.get("/mobile/feed?skus=SKU-0001&fields=cards.sku").await.json().await.unwrap();
    assert_eq!(body, json!({ "cards": [{ "sku": "SKU-0001" }] }));

    let err = problem(stack.get("/mobile/home?fields=name,nickname").await, 400, "UNKNOWN_FIELD").await;
    assert!(err["detail"].as_str().unwrap().contains("`nickname`"), "{err}");
    let err = problem(stack.get("/mobile/home?fields=recentOrders.sku").await, 400, "UNKNOWN_FIELD").await;
    assert!(err["detail"].as_str().unwrap().contains("`recentOrders.sku`"), "{err}");
    problem(stack.get("/mobile/home?fields=name,,badge").await, 400, "INVALID_FIELDS").await;
}

#[tokio::test]
async fn etag_and_not_modified() {
    let stack = mobile().set("shaping.compression_min_bytes", "0").start().await;
    let first = stack.get("/mobile/home").await;
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    let url = stack.bff.url("/mobile/home");
    let again = stack.http.get(&url).bearer_auth(stack.token()).header("if-none-match", &tag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], tag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    let other =
        stack.http.get(&url).bearer_auth(stack.token()).header("if-none-match", "W/\"0000\"").send().await.unwrap();
    assert_eq!(other.status(), 200);
    // A different representation has a different tag.
    let projected = stack.get("/mobile/home?fields=name").await;
    assert_ne!(projected.headers()["etag"], tag.as_str());

    // A HEAD gets the GET's head, over either protocol: its tag, its length (the projection's
    // too), its coding, and a 304 for the tag it has; no length where the GET's is not known
    // ahead (compressed), rather than a length of zero.
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    for client in [&stack.http, &h2c] {
        for (path, coding) in
            [("/mobile/home", "identity"), ("/mobile/home?fields=name", "identity"), ("/mobile/home", "br")]
        {
            let send = |method| {
                let request = client.request(method, stack.bff.url(path)).bearer_auth(stack.token());
                request.header("accept-encoding", coding).send()
            };
            let (get, head) = (send(reqwest::Method::GET).await.unwrap(), send(reqwest::Method::HEAD).await.unwrap());
            let fields = |r: &reqwest::Response| {
                ["etag", "content-length", "content-encoding"].map(|n| r.headers().get(n).cloned())
            };
            assert_eq!((head.status(), fields(&head)), (get.status(), fields(&get)), "{path} {coding}");
            assert_eq!(head.headers().get("content-length").is_some(), coding == "identity", "{path} {coding}");
            assert!(head.bytes().await.unwrap().is_empty());
        }
        let head = client.head(&url).bearer_auth(stack.token()).header("if-none-match", &tag).send().await.unwrap();
        assert_eq!(head.status(), 304);
    }
}

async fn asking_for(stack: &common::Stack, path: &str, encoding: &str) -> reqwest::Response {
    let response =
        stack.http.get(stack.bff.url(path)).bearer_auth(stack.token()).header("accept-encoding", encoding).send().await;
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn encoded(stack: &common::Stack, encoding: &str) -> Vec<u8> {
    let response = asking_for(stack, "/mobile/home", encoding).await;
    assert_eq!(response.headers()["content-encoding"], encoding);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn gzip_and_brotli_when_asked() {
    let stack = mobile().set("shaping.compression_min_bytes", "0").start().await;
    let plain = stack.get("/mobile/home").await;
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.unwrap();

    let mut text = String::new();
    flate2::read::GzDecoder::new(&encoded(&stack, "gzip").await[..]).read_to_string(&mut text).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), plain);

    let mut text = String::new();
    brotli::Decompressor::new(&encoded(&stack, "br").await[..], 4096).read_to_string(&mut text).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), plain);
}

/// A client that excludes every coding it could get gets the answer in none (RFC 9110 §12.5.3),
/// with its status: not a `406` after the handler ran, whatever it excludes.
#[tokio::test]
async fn an_answer_no_coding_is_acceptable_for_goes_uncoded_with_its_status() {
    let stack = mobile().set("shaping.compression_min_bytes", "0").start().await;
    let plain: Value = stack.get("/mobile/home").await.json().await.unwrap();
    for refused in ["gzip;q=0, identity;q=0, *;q=0", "br;q=0, gzip;q=0", "gzip;q=0", "identity;q=0", "deflate"] {
        let response = asking_for(&stack, "/mobile/home", refused).await;
        assert!(response.headers().get("content-encoding").is_none(), "{refused}");
        assert_eq!(response.json::<Value>().await.unwrap(), plain, "{refused}");
    }
    // The weights decide: gzip over brotli when the client weighs it higher.
    let weighed = asking_for(&stack, "/mobile/home", "br;q=0.2, gzip;q=0.9").await;
    assert_eq!(weighed.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn bodies_under_the_minimum_size_are_not_compressed() {
    let stack = mobile().start().await; // the shipped config: compression_min_bytes = 1024
    let small = asking_for(&stack, "/mobile/home", "gzip").await;
    assert!(small.headers().get("content-encoding").is_none());
    let small = small.bytes().await.unwrap();
    assert!(small.len() < 1024, "{}", small.len());
    serde_json::from_slice::<Value>(&small).expect("plain JSON");

    let skus: Vec<String> = (1..=20).map(|i| format!("SKU-{i:04}")).collect();
    let path = format!("/mobile/feed?skus={}", skus.join(","));
    let plain = stack.get(&path).await.bytes().await.unwrap();
    assert!(plain.len() >= 1024, "the feed is big enough to be compressed: {}", plain.len());
    let large = asking_for(&stack, &path, "gzip").await;
    assert_eq!(large.headers()["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&large.bytes().await.unwrap()[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text.as_bytes(), &plain[..]);
}

#[tokio::test]
async fn degraded_header_is_not_set_on_errors() {
    let stack = mobile().start().await;
    stack.set_faults(Service::Inventory, Faults { error_rate: 1.0, ..Faults::default() }).await;
    let response = stack.get("/mobile/products/SKU-9999").await;
    assert!(response.headers().get("x-bff-degraded").is_none());
    problem(response, 404, "NOT_FOUND").await;
}
