//! Writes through the BFFs: placing orders (mobile, partner) and reading notifications (web),
//! with idempotent repeats, stock conflicts and bad bodies.

mod common;

use common::{Stack, StackBuilder, problem};
use serde_json::{Value, json};
use services_mock::{Service, data};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

/// A sku with nothing in stock (`data::stock`: available = index * 13 % 25).
const SOLD_OUT: &str = "SKU-0025";

fn available(sku: &str) -> u64 {
    data::stock(data::sku_index(sku).unwrap())["available"].as_u64().unwrap()
}

async fn post(stack: &Stack, path: &str, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.post(stack.bff.url(path)).bearer_auth(stack.token()).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("request")
}

/// The orders the mock holds for user 42 now.
async fn orders_of_42(stack: &Stack) -> Vec<Value> {
    let url = format!("{}/orders?user=42&limit=50", stack.mocks.url(Service::Orders));
    stack.http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn mobile_places_an_order_that_reads_back_and_leads_the_home_screen() {
    let stack = mobile().start().await;
    let basket = json!({ "items": [{ "sku": "SKU-0003", "qty": 1 }, { "sku": "SKU-0007", "qty": 2 }, { "sku": "SKU-0003", "qty": 1 }] });
    let response = post(&stack, "/mobile/orders", &basket, None).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let placed: Value = response.json().await.unwrap();
    let id = placed["id"].as_u64().unwrap();
    assert_eq!(location, format!("/mobile/orders/{id}"));
    assert_eq!(placed["itemCount"], 4, "the repeated sku is one line of two");
    assert_eq!(placed["status"], "processing");
    let price = |sku: &str| data::product(data::sku_index(sku).unwrap())["price"].as_f64().unwrap();
    let total = placed["total"].as_f64().unwrap();
    assert!((total - (2.0 * price("SKU-0003") + 2.0 * price("SKU-0007"))).abs() < 0.005, "{placed}");

    let read: Value = stack.get(&location).await.json().await.unwrap();
    assert_eq!(read, placed);
    let home: Value = stack.get("/mobile/home").await.json().await.unwrap();
    assert_eq!(home["recentOrders"][0]["id"], id);
    // One catalog batch call and one stock call per distinct sku, then the write.
    assert_eq!(stack.stats(Service::Catalog).requests, 1);
    assert_eq!(stack.stats(Service::Inventory).requests, 2);
}

#[tokio::test]
async fn a_mobile_repeat_with_the_same_idempotency_key_places_one_order() {
    let stack = mobile().start().await;
    let before = orders_of_42(&stack).await.len();
    let basket = json!({ "items": [{ "sku": "SKU-0011", "qty": 1 }] });
    let first: Value = post(&stack, "/mobile/orders", &basket, Some("tap-1")).await.json().await.unwrap();
    let sent = stack.stats(Service::Orders).last_headers["idempotency-key"].clone();
    let again = post(&stack, "/mobile/orders", &basket, Some("tap-1")).await;
    assert_eq!(again.status(), 201);
    // The upstream sees the key scoped to the user: not as the client sent it, the same each time.
    assert_ne!(sent, "tap-1");
    assert_eq!(stack.stats(Service::Orders).last_headers["idempotency-key"], sent);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(orders_of_42(&stack).await.len(), before + 1);
    // Another key is another order.
    let other: Value = post(&stack, "/mobile/orders", &basket, Some("tap-2")).await.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);
    assert_eq!(orders_of_42(&stack).await.len(), before + 2);
}

/// Places `basket` as `user` with `key`.
async fn post_as(stack: &Stack, user: &str, basket: &Value, key: &str) -> reqwest::Response {
    let token = stack.mocks.token(user, "profile orders", 600);
    let request = stack.http.post(stack.bff.url("/mobile/orders")).bearer_auth(token).json(basket);
    request.header("idempotency-key", key).send().await.unwrap()
}

#[tokio::test]
async fn two_mobile_users_with_the_same_key_place_two_orders_and_a_reuse_is_422() {
    let stack = mobile().start().await;
    let basket = json!({ "items": [{ "sku": "SKU-0011", "qty": 1 }] });
    let other_basket = json!({ "items": [{ "sku": "SKU-0012", "qty": 2 }] });
    let first = post_as(&stack, "42", &basket, "same-key").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // Another user, the same key, another body: their own order, not a 422 about someone else's.
    let theirs = post_as(&stack, "43", &other_basket, "same-key").await;
    assert_eq!(theirs.status(), 201);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(theirs["itemCount"], 2);
    // Each user's repeat still answers their own first order.
    let again: Value = post_as(&stack, "42", &basket, "same-key").await.json().await.unwrap();
    assert_eq!(again, first);
    // The key reused by its own user with another body: 422, as on the partner API.
    let reused = post_as(&stack, "42", &other_basket, "same-key").await;
    let body = problem(reused, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
}

#[tokio::test]
async fn mobile_refuses_what_cannot_be_ordered_without_writing() {
    let stack = mobile().start().await;
    assert_eq!(available(SOLD_OUT), 0);
    let before = orders_of_42(&stack).await.len();
    let sold_out = json!({ "items": [{ "sku": "SKU-0001", "qty": 1 }, { "sku": SOLD_OUT, "qty": 1 }] });
    let body = problem(post(&stack, "/mobile/orders", &sold_out, None).await, 409, "OUT_OF_STOCK").await;
    assert!(body["detail"].as_str().unwrap().contains(SOLD_OUT), "{body}");
    let too_many = json!({ "items": [{ "sku": "SKU-0001", "qty": available("SKU-0001") + 1 }] });
    problem(post(&stack, "/mobile/orders", &too_many, None).await, 409, "OUT_OF_STOCK").await;
    let unknown = json!({ "items": [{ "sku": "SKU-9999", "qty": 1 }] });
    let body = problem(post(&stack, "/mobile/orders", &unknown, None).await, 422, "UNKNOWN_SKU").await;
    assert!(body["detail"].as_str().unwrap().contains("SKU-9999"));
    problem(post(&stack, "/mobile/orders", &json!({ "items": [] }), None).await, 422, "INVALID_ORDER").await;
    problem(post(&stack, "/mobile/orders", &json!({ "basket": [] }), None).await, 400, "INVALID_BODY").await;
    let bad_key = json!({ "items": [{ "sku": "SKU-0001", "qty": 1 }] });
    problem(post(&stack, "/mobile/orders", &bad_key, Some("has space")).await, 400, "INVALID_IDEMPOTENCY_KEY").await;
    let two_keys = stack.http.post(stack.bff.url("/mobile/orders")).bearer_auth(stack.token());
    let two_keys = two_keys.header("idempotency-key", "k-1").header("idempotency-key", "k-2").json(&bad_key);
    problem(two_keys.send().await.unwrap(), 400, "INVALID_IDEMPOTENCY_KEY").await;
    assert_eq!(orders_of_42(&stack).await.len(), before, "nothing was written");
}

#[tokio::test]
async fn bodies_are_typed_bounded_and_authenticated() {
    let stack = mobile().start().await;
    let url = stack.bff.url("/mobile/orders");
    let plain = stack.http.post(&url).bearer_auth(stack.token()).header("content-type", "text/plain").body("{}");
    problem(plain.send().await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // A body said to be compressed is refused, not read as if it were not: the same JSON with
    // `Content-Encoding: gzip` would otherwise be an order here and garbage to anything in front
    // that decodes it. Nothing is written.
    let before = orders_of_42(&stack).await.len();
    let order = r#"{"items":[{"sku":"SKU-0001","qty":1}]}"#;
    let coded = stack.http.post(&url).bearer_auth(stack.token()).header("content-type", "application/json");
    let coded = coded.header("content-encoding", "gzip").header("idempotency-key", "coded-1").body(order);
    let response = coded.send().await.unwrap();
    assert_eq!(response.headers()["accept-encoding"], "identity");
    problem(response, 415, "UNSUPPORTED_CONTENT_ENCODING").await;
    assert_eq!(orders_of_42(&stack).await.len(), before, "nothing was written");
    let huge = format!(r#"{{"items":[{}]}}"#, r#"{"sku":"SKU-0001","qty":1},"#.repeat(4_000));
    let large = stack.http.post(&url).bearer_auth(stack.token()).header("content-type", "application/json").body(huge);
    problem(large.send().await.unwrap(), 413, "BODY_TOO_LARGE").await;
    let anonymous = stack.http.post(&url).json(&json!({ "items": [] }));
    problem(anonymous.send().await.unwrap(), 401, "AUTH_REQUIRED").await;
    problem(stack.get("/mobile/orders").await, 405, "METHOD_NOT_ALLOWED").await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// With `server.request_body_codings = ["gzip"]`, a mobile client's gzip order is decoded and
/// placed; one that inflates past the route's limit, or is not gzip, is refused before anything
/// is written.
#[tokio::test]
async fn a_gzip_order_is_placed_when_the_bff_decodes_gzip() {
    let stack = mobile().set("server.request_body_codings", r#"["gzip"]"#).start().await;
    let url = stack.bff.url("/mobile/orders");
    let send = |body: Vec<u8>, key: &'static str| {
        let request = stack.http.post(&url).bearer_auth(stack.token()).header("content-type", "application/json");
        request.header("content-encoding", "gzip").header("idempotency-key", key).body(body).send()
    };
    let before = orders_of_42(&stack).await.len();
    let response = send(gzip(br#"{"items":[{"sku":"SKU-0001","qty":2}]}"#), "gzip-1").await.unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["itemCount"], 2, "{placed}");
    assert_eq!(orders_of_42(&stack).await.len(), before + 1);
    // 64 KiB of padding and more compress to a few hundred bytes.
    let bomb = [br#"{"items":[{"sku":"SKU-0001","qty":1}]"#.as_slice(), &vec![b' '; 4 << 20], b"}"].concat();
    problem(send(gzip(&bomb), "gzip-2").await.unwrap(), 413, "BODY_TOO_LARGE").await;
    problem(send(b"not gzip".to_vec(), "gzip-3").await.unwrap(), 400, "INVALID_BODY").await;
    // Another coding is still a 415, whose answer now lists gzip among what the BFF reads.
    let brotli = stack.http.post(&url).bearer_auth(stack.token()).header("content-type", "application/json");
    let brotli = brotli.header("content-encoding", "br").header("idempotency-key", "gzip-4").body("x");
    let response = brotli.send().await.unwrap();
    assert_eq!(response.headers()["accept-encoding"], "gzip, identity");
    problem(response, 415, "UNSUPPORTED_CONTENT_ENCODING").await;
    assert_eq!(orders_of_42(&stack).await.len(), before + 1, "nothing more was written");
}

#[tokio::test]
async fn web_marks_notifications_read() {
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await;
    assert_ne!(data::unread_count(42), 0);
    let response = post(&stack, "/web/notifications/read", &json!({}), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "unread": 0 }));
    let home: Value = stack.get("/web/home").await.json().await.unwrap();
    assert!(home["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true), "{home}");
}

fn partner() -> StackBuilder {
    StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
}

async fn partner_post(stack: &Stack, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = stack.http.post(stack.bff.url("/v2/orders")).header("x-api-key", "demo-pro-key").json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn partners_place_orders_idempotently_and_only_with_a_key() {
    let stack = partner().start().await;
    let before = orders_of_42(&stack).await.len();
    let order = json!({ "user": "42", "items": [{ "sku": "SKU-0003", "qty": 2 }] });
    problem(partner_post(&stack, &order, None).await, 400, "IDEMPOTENCY_KEY_REQUIRED").await;

    let first = partner_post(&stack, &order, Some("po-1")).await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(location, format!("/v2/orders/{}", first["id"]));
    assert_eq!(first["userId"], 42);
    assert_eq!(first["items"][0]["quantity"], 2);
    assert_eq!(first["total"]["currency"], "EUR");
    let again: Value = partner_post(&stack, &order, Some("po-1")).await.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(orders_of_42(&stack).await.len(), before + 1);
    let read = stack.http.get(stack.bff.url(&location)).header("x-api-key", "demo-pro-key").send().await.unwrap();
    assert_eq!(read.json::<Value>().await.unwrap(), first);

    let other = json!({ "user": "42", "items": [{ "sku": "SKU-0004", "qty": 1 }] });
    problem(partner_post(&stack, &other, Some("po-1")).await, 422, "IDEMPOTENCY_KEY_REUSED").await;
    let sold_out = json!({ "user": "42", "items": [{ "sku": SOLD_OUT, "qty": 1 }] });
    problem(partner_post(&stack, &sold_out, Some("po-2")).await, 409, "OUT_OF_STOCK").await;
    let unknown = json!({ "user": "42", "items": [{ "sku": "SKU-0404", "qty": 1 }] });
    problem(partner_post(&stack, &unknown, Some("po-3")).await, 422, "UNKNOWN_SKU").await;
    let nobody = json!({ "user": "0", "items": [{ "sku": "SKU-0003", "qty": 1 }] });
    problem(partner_post(&stack, &nobody, Some("po-4")).await, 404, "NOT_FOUND").await;
    assert_eq!(orders_of_42(&stack).await.len(), before + 1);
}

/// A second partner, of account `acct-2` (users 101-200), with the key `other-tenant-key`.
const OTHER_TENANT: &str = r#"{ tier = "pro", account = "acct-2", scopes = ["orders"],
    key_sha256 = "27c05ce3f2f50102dce55afe0f1b96f1a354c6d2b80a6e54bbe4b3bc02b954de" }"#;

#[tokio::test]
async fn two_partner_accounts_with_the_same_key_neither_see_nor_block_each_other() {
    let stack = partner().set("api_keys.clients.other", OTHER_TENANT).start().await;
    let as_other = |body: &Value| {
        let request = stack.http.post(stack.bff.url("/v2/orders")).header("x-api-key", "other-tenant-key");
        request.header("idempotency-key", "shared-1").json(body).send()
    };
    let ours = json!({ "user": "42", "items": [{ "sku": "SKU-0003", "qty": 1 }] });
    let theirs = json!({ "user": "142", "items": [{ "sku": "SKU-0003", "qty": 2 }] });
    // The other tenant uses the key first: our write with it is ours, not a 422 (no oracle).
    let placed = as_other(&theirs).await.unwrap();
    assert_eq!(placed.status(), 201);
    let their_order: Value = placed.json().await.unwrap();
    let their_key = stack.stats(Service::Orders).last_headers["idempotency-key"].clone();
    let mine = partner_post(&stack, &ours, Some("shared-1")).await;
    assert_eq!(mine.status(), 201, "another tenant's use of a key blocked ours");
    let my_order: Value = mine.json().await.unwrap();
    assert_eq!(my_order["userId"], 42);
    assert_ne!(stack.stats(Service::Orders).last_headers["idempotency-key"], their_key);
    // Each tenant's repeat answers its own order.
    assert_eq!(partner_post(&stack, &ours, Some("shared-1")).await.json::<Value>().await.unwrap(), my_order);
    assert_eq!(as_other(&theirs).await.unwrap().json::<Value>().await.unwrap(), their_order);
}
