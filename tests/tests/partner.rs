//! The partner API: API keys, v1 and v2 contracts, deprecation headers, frozen OpenAPI documents.

mod common;

use common::{Stack, StackBuilder, problem};
use serde_json::{Value, json};
use services_mock::{Faults, Service, data};

fn partner() -> StackBuilder {
    StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
}

async fn get(stack: &Stack, path: &str) -> reqwest::Response {
    stack.http.get(stack.bff.url(path)).header("x-api-key", "demo-pro-key").send().await.unwrap()
}

/// Unpadded base64url, as the API encodes cursors.
fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn epoch(rfc3339: &Value) -> u64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn money(amount: &Value) -> Value {
    json!({ "amount": format!("{:.2}", amount.as_f64().unwrap()), "currency": "EUR" })
}

fn v1_order(o: &Value) -> Value {
    let items: Vec<Value> = o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!({ "sku": i["sku"], "quantity": i["quantity"], "unitPrice": i["unitPrice"] }))
        .collect();
    json!({
        "id": o["id"], "userId": o["userId"], "status": o["status"], "total": o["total"],
        "currency": "EUR", "placedAt": epoch(&o["placedAt"]), "items": items,
    })
}

fn v2_order(o: &Value) -> Value {
    let items: Vec<Value> = o["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!({ "sku": i["sku"], "quantity": i["quantity"], "unitPrice": money(&i["unitPrice"]) }))
        .collect();
    json!({
        "id": o["id"], "userId": o["userId"], "status": o["status"], "total": money(&o["total"]),
        "placedAt": o["placedAt"], "items": items,
    })
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let stack = partner().start().await;
    let url = stack.bff.url("/v2/orders/4205");
    problem(stack.http.get(&url).send().await.unwrap(), 401, "API_KEY_REQUIRED").await;
    problem(stack.http.get(&url).header("x-api-key", "demo-pro-kez").send().await.unwrap(), 401, "API_KEY_INVALID")
        .await;
    problem(stack.http.get(&url).header("x-api-key", "").send().await.unwrap(), 401, "API_KEY_INVALID").await;
    // A JWT is not an API key.
    problem(stack.http.get(&url).bearer_auth(stack.token()).send().await.unwrap(), 401, "API_KEY_REQUIRED").await;
    // Two keys, each valid: which one a reader takes is its choice, so neither is.
    let two = stack.http.get(&url).header("x-api-key", "demo-free-key").header("x-api-key", "demo-pro-key");
    let body = problem(two.send().await.unwrap(), 400, "AUTH_AMBIGUOUS").await;
    assert!(body["detail"].as_str().unwrap().contains("x-api-key"), "{body}");
    assert_eq!(stack.stats(Service::Orders).requests, 0);
    for key in ["demo-free-key", "demo-pro-key"] {
        assert_eq!(stack.http.get(&url).header("x-api-key", key).send().await.unwrap().status(), 200, "{key}");
    }
}

#[tokio::test]
async fn v1_orders_and_products() {
    let stack = partner().start().await;
    let newest = data::order(42, data::order_count(42));
    let response = get(&stack, "/v1/orders/4205").await;
    assert_eq!(response.headers()["deprecation"], bff_partner::V1_DEPRECATION);
    assert_eq!(response.headers()["sunset"], bff_partner::V1_SUNSET);
    assert!(response.headers()["link"].to_str().unwrap().contains("</v2/openapi.json>; rel=\"successor-version\""));
    assert_eq!(response.json::<Value>().await.unwrap(), v1_order(&newest));

    let all = data::orders(42, 50);
    let page1: Value = get(&stack, "/v1/orders?user=42").await.json().await.unwrap();
    let page2: Value = get(&stack, "/v1/orders?user=42&page=2").await.json().await.unwrap();
    assert_eq!(
        page1,
        json!({ "orders": all[..3].iter().map(v1_order).collect::<Vec<_>>(), "page": 1, "pageSize": 3, "totalPages": 2 })
    );
    assert_eq!(
        page2,
        json!({ "orders": all[3..].iter().map(v1_order).collect::<Vec<_>>(), "page": 2, "pageSize": 3, "totalPages": 2 })
    );
    problem(get(&stack, "/v1/orders?user=42&page=0").await, 400, "INVALID_QUERY").await;
    let beyond: Value = get(&stack, &format!("/v1/orders?user=42&page={}", usize::MAX)).await.json().await.unwrap();
    assert_eq!(beyond["orders"], json!([]));
    problem(get(&stack, "/v1/orders?user=42&page=x").await, 400, "INVALID_QUERY").await;
    problem(get(&stack, "/v1/orders").await, 400, "INVALID_QUERY").await;
    problem(get(&stack, "/v1/orders?user=999999").await, 404, "NOT_FOUND").await;

    let p = data::product(1);
    let body: Value = get(&stack, "/v1/products/SKU-0001").await.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "sku": "SKU-0001", "name": p["name"], "description": p["description"], "price": p["price"], "currency": "EUR", "category": p["category"] })
    );
    problem(get(&stack, "/v1/products/SKU-0000").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn v2_orders_with_cursors() {
    let stack = partner().start().await;
    let response = get(&stack, "/v2/orders/4205").await;
    assert!(response.headers().get("deprecation").is_none() && response.headers().get("sunset").is_none());
    assert_eq!(response.json::<Value>().await.unwrap(), v2_order(&data::order(42, data::order_count(42))));

    let mut seen = Vec::new();
    let mut path = "/v2/orders?user=42&limit=2".to_owned();
    for _ in 0..10 {
        let page: Value = get(&stack, &path).await.json().await.unwrap();
        seen.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/v2/orders?user=42&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, data::orders(42, 50).iter().map(v2_order).collect::<Vec<_>>());
    problem(get(&stack, "/v2/orders?user=42&cursor=bm9wZQ").await, 400, "INVALID_CURSOR").await;
    problem(get(&stack, "/v2/orders?user=42&limit=0").await, 400, "INVALID_QUERY").await;
    // Offsets near the top of the integer range are an empty page, not an overflow.
    let huge = base64_url(&format!("o:{}", usize::MAX));
    let page: Value = get(&stack, &format!("/v2/orders?user=42&cursor={huge}")).await.json().await.unwrap();
    assert_eq!(page, json!({ "data": [], "nextCursor": null }));
}

#[tokio::test]
async fn v2_products_with_availability() {
    let stack = partner().start().await;
    let p = data::product(7);
    let stock = data::stock(7);
    let expected = json!({
        "sku": "SKU-0007", "name": p["name"], "description": p["description"], "price": money(&p["price"]),
        "category": p["category"], "availability": { "inStock": stock["inStock"], "available": stock["available"] },
    });
    assert_eq!(get(&stack, "/v2/products/SKU-0007").await.json::<Value>().await.unwrap(), expected);

    stack.set_faults(Service::Inventory, Faults { error_rate: 1.0, ..Faults::default() }).await;
    let response = get(&stack, "/v2/products/SKU-0007").await;
    assert_eq!(response.headers()["x-bff-degraded"], "inventory");
    assert_eq!(response.json::<Value>().await.unwrap()["availability"], Value::Null);
}

fn snapshot_path(version: u8) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../bff-partner/openapi/v{version}.json"))
}

/// The contract is frozen: a change to either document must be made on purpose, by rerunning this
/// test with `UPDATE_SNAPSHOTS=1` and committing the new file.
#[test]
fn openapi_documents_match_the_committed_snapshots() {
    for version in [1, 2] {
        let generated = bff_partner::openapi_json(version).unwrap();
        let path = snapshot_path(version);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            generated == committed,
            "v{version} OpenAPI document differs from {}; rerun with UPDATE_SNAPSHOTS=1 if the change is deliberate",
            path.display()
        );
        let doc: Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}

#[tokio::test]
async fn openapi_documents_are_served_without_a_key() {
    let stack = partner().start().await;
    for version in [1u8, 2] {
        let response = stack.http.get(stack.bff.url(&format!("/v{version}/openapi.json"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let served: Value = response.json().await.unwrap();
        let committed: Value = serde_json::from_str(&std::fs::read_to_string(snapshot_path(version)).unwrap()).unwrap();
        assert_eq!(served, committed);
        let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(paths.iter().all(|p| p.starts_with(&format!("/v{version}/"))));
    }
}
