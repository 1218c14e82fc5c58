//! Resilience end to end, through bff-mobile and the mocks: retries of keyed writes, the circuit
//! breaker, several instances with outlier ejection.

mod common;

use std::time::Duration;

use common::{StackBuilder, eventually, problem};
use serde_json::{Value, json};
use services_mock::{Faults, Service};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

fn failing() -> Faults {
    Faults { error_rate: 1.0, ..Faults::default() }
}

/// The orders the mock holds for user 42 now.
async fn orders_of_42(stack: &common::Stack) -> usize {
    let url = format!("{}/orders?user=42&limit=50", stack.mocks.url(Service::Orders));
    stack.http.get(url).send().await.unwrap().json::<Vec<Value>>().await.unwrap().len()
}

async fn metrics(stack: &common::Stack) -> String {
    stack.http.get(stack.admin.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The orders service places the order and then loses its answer (a 500) on the first call: a
/// keyed write is sent again and the mock replays the order; without a key it is sent once.
#[tokio::test]
async fn a_keyed_write_whose_answer_was_lost_is_retried_and_places_one_order() {
    let stack = mobile().start().await;
    let basket = json!({ "items": [{ "sku": "SKU-0011", "qty": 1 }] });
    let before = orders_of_42(&stack).await;
    stack.set_faults(Service::Orders, Faults { fail_every: 2, ..Faults::default() }).await;
    stack.reset_stats();
    let placed = stack
        .http
        .post(stack.bff.url("/mobile/orders"))
        .bearer_auth(stack.token())
        .header("idempotency-key", "lost-answer-1")
        .json(&basket)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    assert_eq!(stack.stats(Service::Orders).requests, 2, "the first attempt and one retry");
    stack.set_faults(Service::Orders, Faults::default()).await;
    assert_eq!(orders_of_42(&stack).await, before + 1, "one order for two attempts");

    // Without a key the write is not sent again: the caller hears of the failure (the order the
    // lost answer was about exists, as it would with a real service).
    stack.set_faults(Service::Orders, Faults { fail_every: 2, ..Faults::default() }).await;
    stack.reset_stats();
    let unkeyed =
        stack.http.post(stack.bff.url("/mobile/orders")).bearer_auth(stack.token()).json(&basket).send().await.unwrap();
    assert_eq!(unkeyed.status(), 502);
    assert_eq!(stack.stats(Service::Orders).requests, 1, "not retried");
}

/// users down: /mobile/home fails until the breaker opens, then fails at once without calling
/// users; once users is back, probes close it.
#[tokio::test]
async fn the_breaker_opens_on_a_dead_required_upstream_and_closes_when_it_is_back() {
    let stack = mobile().set("defaults.breaker.open_for", "\"300ms\"").start().await;
    stack.set_faults(Service::Users, failing()).await;
    let mut codes = Vec::new();
    for _ in 0..25 {
        let response = stack.get("/mobile/home").await;
        let body: Value = response.json().await.unwrap();
        codes.push(body["code"].as_str().unwrap_or_default().to_owned());
    }
    // Twenty failures in a row open it; the rest fail at once.
    assert!(codes[..20].iter().all(|c| c == "UPSTREAM_BAD_STATUS"), "{codes:?}");
    assert!(codes[20..].iter().all(|c| c == "UPSTREAM_CIRCUIT_OPEN"), "{codes:?}");
    let calls = stack.stats(Service::Users).requests;
    let open = stack.get("/mobile/home").await;
    let body = problem(open, 503, "UPSTREAM_CIRCUIT_OPEN").await;
    assert!(body["detail"].as_str().unwrap().contains("users"), "{body}");
    assert_eq!(stack.stats(Service::Users).requests, calls, "no call while open");

    // Back: after the cool-down the probes succeed and it closes.
    stack.set_faults(Service::Users, Faults::default()).await;
    let closed =
        eventually(Duration::from_secs(10), || async { stack.get("/mobile/home").await.status() == 200 }).await;
    assert!(closed, "the breaker never let a probe through");
    for _ in 0..5 {
        assert_eq!(stack.get("/mobile/home").await.status(), 200);
    }
    let text = metrics(&stack).await;
    assert!(text.contains(r#"bff_upstream_circuit_transitions_total{upstream="users",to="open"} 1"#), "{text}");
    assert!(text.contains(r#"bff_upstream_circuit_state{upstream="users"} 0"#), "{text}");
}

/// An optional part whose breaker is open degrades without a call.
#[tokio::test]
async fn an_open_breaker_degrades_an_optional_part_without_calling_it() {
    // Open for an hour once open, so that no probe can fall within the test, however slow.
    let stack = mobile().set("defaults.breaker.open_for", "\"1h\"").start().await;
    stack.set_faults(Service::Notifications, failing()).await;
    for _ in 0..22 {
        assert_eq!(stack.get("/mobile/home").await.status(), 200);
    }
    let calls = stack.stats(Service::Notifications).requests;
    let response = stack.get("/mobile/home").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-bff-degraded"], "notifications");
    assert_eq!(stack.stats(Service::Notifications).requests, calls, "no call while open");
}

/// Three catalog instances, one answering 500: every request succeeds (a failed call is retried
/// on another instance), and after five failures in a row the bad one gets no more traffic.
#[tokio::test]
async fn with_three_instances_and_one_failing_requests_keep_succeeding() {
    let stack = mobile().instances(Service::Catalog, 3).start().await;
    let instances = stack.mocks.instances(Service::Catalog);
    assert_eq!(instances.len(), 3);
    instances[1].faults.set(failing());
    // A different product each time: the catalog's answers are cached.
    for sku in 1..=90 {
        let response = stack.get(&format!("/mobile/products/SKU-{sku:04}")).await;
        assert_eq!(response.status(), 200);
    }
    let served: Vec<u64> = instances.iter().map(|i| i.stats.snapshot().requests).collect();
    assert_eq!(served[1], 5, "ejected after five failures in a row: {served:?}");
    assert!(served[0] > 20 && served[2] > 20, "the healthy ones share the rest: {served:?}");
    assert_eq!(served.iter().sum::<u64>(), 95, "each failure cost one retry: {served:?}");
    let text = metrics(&stack).await;
    assert!(text.contains(r#"bff_upstream_ejections_total{upstream="catalog"} 1"#), "{text}");
    assert!(text.contains(r#"bff_upstream_instances_ejected{upstream="catalog"} 1"#), "{text}");
}

/// The shipped mobile config caches catalog answers as the catalog's `Cache-Control` allows:
/// within `max-age` a product is served without a call, even while the catalog fails.
#[tokio::test]
async fn catalog_answers_are_cached_as_the_catalog_allows() {
    let stack = mobile().start().await;
    let first: Value = stack.get("/mobile/products/SKU-0003").await.json().await.unwrap();
    assert_eq!(stack.stats(Service::Catalog).requests, 1);
    stack.set_faults(Service::Catalog, failing()).await;
    for _ in 0..3 {
        let again = stack.get("/mobile/products/SKU-0003").await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(stack.stats(Service::Catalog).requests, 1, "served from the cache");
    // Another product is not cached: the failure shows.
    let other = stack.get("/mobile/products/SKU-0004").await;
    assert_eq!(other.status(), 502);
    let text = metrics(&stack).await;
    assert!(text.contains(r#"bff_upstream_cache_total{upstream="catalog",result="hit"} 3"#), "{text}");
}

/// Concurrent identical product pages make one catalog call (coalescing, on for catalog in the
/// shipped config, with the cache emptied by asking for a product nobody asked for yet).
#[tokio::test]
async fn concurrent_identical_product_pages_make_one_catalog_call() {
    let stack = mobile().start().await;
    stack.set_faults(Service::Catalog, common::latency(600)).await;
    let pages = (0..20).map(|_| stack.get("/mobile/products/SKU-0009"));
    for page in futures::future::join_all(pages).await {
        assert_eq!(page.status(), 200);
    }
    assert_eq!(stack.stats(Service::Catalog).requests, 1);
    let text = metrics(&stack).await;
    assert!(text.contains(r#"bff_upstream_coalesced_total{upstream="catalog"} 19"#), "{text}");
}
