//! Load shedding: over `server.max_in_flight_requests`, a request is refused at once with
//! `503 OVERLOADED` and `Retry-After`, while `/healthz` and the admin listener still answer.

mod common;

use std::time::Duration;

use common::{StackBuilder, eventually, latency, problem};
use services_mock::Service;

#[tokio::test]
async fn over_the_cap_a_request_is_shed_at_once_and_health_still_answers() {
    let stack = StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
        .set("server.max_in_flight_requests", "2")
        .start()
        .await;
    stack.set_faults(Service::Users, latency(800)).await;
    let slow = |stack: &common::Stack| stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token()).send();
    let (first, second) = (tokio::spawn(slow(&stack)), tokio::spawn(slow(&stack)));
    let both_in = eventually(Duration::from_secs(5), || async { stack.stats(Service::Users).in_flight == 2 }).await;
    assert!(both_in, "the two slow requests never reached users");

    let shed = stack.get("/mobile/home").await;
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = problem(shed, 503, "OVERLOADED").await;
    assert!(body["detail"].as_str().unwrap().contains("2 requests in flight"), "{body}");
    // Refused at once: the two are still waiting on users.
    assert_eq!(stack.stats(Service::Users).in_flight, 2);
    assert_eq!(stack.http.get(stack.bff.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(stack.http.get(stack.admin.url("/metrics")).send().await.unwrap().status(), 200);

    for request in [first, second] {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    // Places free again.
    stack.set_faults(Service::Users, latency(0)).await;
    assert_eq!(stack.get("/mobile/home").await.status(), 200);
    let metrics = stack.http.get(stack.admin.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("bff_requests_shed_total 1"), "{metrics}");
}
