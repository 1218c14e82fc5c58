//! Dot segments: a client's `..` (or `.`, `%2e%2e`, `.%2E`) in an id, a query or a body never
//! becomes a path segment of an upstream call, through any BFF: a lookup answers 404, any other
//! use 400 `INVALID_ID`, and no upstream is called with it.

mod common;

use std::collections::BTreeMap;

use common::{Stack, StackBuilder, raw_http};
use serde_json::{Value, json};
use services_mock::Service;

/// What a client writes for `..` or `.` in a path (with path parameters too: servers that drop
/// them, Tomcat's, read `..;x` as `..`).
const IN_PATHS: [&str; 10] = ["..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "..;x", ".;", "%2e%2e%3bx"];
/// The same in a query value.
const IN_QUERIES: [&str; 3] = ["..", "%2e%2e", "."];

/// Business requests per upstream (the JWKS fetches of `auth` left out).
fn calls(stack: &Stack) -> BTreeMap<Service, u64> {
    stack
        .mocks
        .iter()
        .filter(|(s, _)| *s != Service::Auth)
        .map(|(s, running)| (s, running.stats.snapshot().requests))
        .collect()
}

/// Sends `method path` with `headers` and a JSON `body`, and checks the status and, for a
/// problem, its code; returns the upstream calls it caused, by service.
async fn expect(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<Value>,
    status: u16,
    code: Option<&str>,
) -> BTreeMap<Service, u64> {
    let before = calls(stack);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bff\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (got, answer) = raw_http(stack.bff.addr, &request).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    if let Some(code) = code {
        let problem: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{method} {path}: {answer}"));
        assert_eq!(problem["code"], code, "{method} {path}: {answer}");
    }
    calls(stack).into_iter().map(|(service, n)| (service, n - before[&service])).filter(|(_, n)| *n > 0).collect()
}

fn bearer(stack: &Stack, sub: &str) -> String {
    format!("Authorization: Bearer {}\r\n", stack.mocks.token(sub, "profile orders", 600))
}

#[tokio::test]
async fn mobile_ids_skus_and_subjects() {
    let stack = StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app).start().await;
    let auth = bearer(&stack, "42");
    for dots in IN_PATHS {
        for path in [format!("/mobile/orders/{dots}"), format!("/mobile/products/{dots}")] {
            let called = expect(&stack, "GET", &path, &auth, None, 404, Some("NOT_FOUND")).await;
            assert!(called.is_empty(), "{path} called {called:?}");
        }
    }
    // A sku in a body: refused before the stock lookup, and nothing is ordered.
    for sku in ["..", "."] {
        let order = json!({"items": [{"sku": sku, "qty": 1}]});
        let called = expect(&stack, "POST", "/mobile/orders", &auth, Some(order), 400, Some("INVALID_ID")).await;
        assert!(!called.contains_key(&Service::Inventory) && !called.contains_key(&Service::Orders), "{called:?}");
    }
    // A feed sku: no stock call for it; the catalog's batch query may carry it (it is a query value).
    for dots in IN_QUERIES {
        let called = expect(&stack, "GET", &format!("/mobile/feed?skus=SKU-0001,{dots}"), &auth, None, 200, None).await;
        assert_eq!(called.get(&Service::Inventory), Some(&1), "{dots}: stock asked for the real sku only: {called:?}");
    }
    // A verified token whose subject is `..`: the caller's own id cannot name a user either.
    let dotted = bearer(&stack, "..");
    let called = expect(&stack, "GET", "/mobile/home", &dotted, None, 400, Some("INVALID_ID")).await;
    assert!(!called.contains_key(&Service::Users) && !called.contains_key(&Service::Notifications), "{called:?}");
}

#[tokio::test]
async fn web_skus_and_subjects() {
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await;
    let auth = bearer(&stack, "42");
    for dots in IN_PATHS {
        let path = format!("/web/products/{dots}");
        let called = expect(&stack, "GET", &path, &auth, None, 404, Some("NOT_FOUND")).await;
        assert!(called.is_empty(), "{path} called {called:?}");
    }
    let dotted = bearer(&stack, "..");
    let called =
        expect(&stack, "POST", "/web/notifications/read", &dotted, Some(json!({})), 400, Some("INVALID_ID")).await;
    assert!(called.is_empty(), "{called:?}");
    let called = expect(&stack, "GET", "/web/home", &dotted, None, 400, Some("INVALID_ID")).await;
    assert!(!called.contains_key(&Service::Users), "{called:?}");
}

#[tokio::test]
async fn partner_ids_users_and_skus() {
    let stack = StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app).start().await;
    let key = "X-Api-Key: demo-pro-key\r\nIdempotency-Key: dots-1\r\n";
    for version in ["v1", "v2"] {
        for dots in IN_PATHS {
            for path in [format!("/{version}/orders/{dots}"), format!("/{version}/products/{dots}")] {
                let called = expect(&stack, "GET", &path, key, None, 404, Some("NOT_FOUND")).await;
                assert!(called.is_empty(), "{path} called {called:?}");
            }
        }
        for dots in IN_QUERIES {
            let path = format!("/{version}/orders?user={dots}");
            let called = expect(&stack, "GET", &path, key, None, 404, Some("NOT_FOUND")).await;
            assert!(called.is_empty(), "{path} called {called:?}");
        }
    }
    // In a body: the user is looked up (404, as an unknown user), a sku is refused (400).
    let order = json!({"user": "..", "items": [{"sku": "SKU-0001", "qty": 1}]});
    let called = expect(&stack, "POST", "/v2/orders", key, Some(order), 404, Some("NOT_FOUND")).await;
    assert!(called.is_empty(), "{called:?}");
    let order = json!({"user": "42", "items": [{"sku": "..", "qty": 1}]});
    let called = expect(&stack, "POST", "/v2/orders", key, Some(order), 400, Some("INVALID_ID")).await;
    assert!(!called.contains_key(&Service::Inventory) && !called.contains_key(&Service::Orders), "{called:?}");
}
