//! What one client may hold: connections, time and header bytes; and how the server stops.

mod common;

use std::time::Duration;

use bff_core::Signal;
use common::{StackBuilder, latency};
use services_mock::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_mobile::DEFAULT_CONFIG, bff_mobile::app)
}

/// Reads until the server closes the connection; how long that took, or `None` past `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_timeout() {
    let stack = mobile().set("server.header_read_timeout", "1s").start().await;
    let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\nX-Half: aaa").await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(20)).await;
    let closed = closed.expect("the half-sent head was still open after 20 s");
    assert!(closed >= Duration::from_millis(900), "closed after {closed:?}, before the timeout");
}

#[tokio::test]
async fn a_connection_that_moves_no_byte_is_closed_after_the_idle_timeout() {
    // The header timer is long here, so only the idle timer can close it.
    // (Longer than the shipped config's longest route deadline, 2 s, as it must be.)
    let stack = mobile().set("server.header_read_timeout", "60s").set("server.idle_timeout", "3s").start().await;
    let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(30)).await;
    let closed = closed.expect("a silent connection was still open after 30 s");
    assert!(closed >= Duration::from_millis(2_900), "closed after {closed:?}");
}

#[tokio::test]
async fn thousands_of_idle_and_half_open_connections_do_not_stop_a_normal_request() {
    let stack = mobile().start().await;
    let mut held = Vec::new();
    for i in 0..2_000 {
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET /mobile/home HTTP/1.1\r\nHost: bff\r\nAuthoriz").await.unwrap();
        }
        held.push(stream);
    }
    let start = Instant::now();
    let response = timeout(Duration::from_secs(10), stack.get("/mobile/home")).await.expect("answered within 10 s");
    assert_eq!(response.status(), 200, "after {:?}", start.elapsed());
    drop(held);
}

#[tokio::test]
async fn over_the_connection_cap_a_new_connection_is_closed_at_once() {
    let stack = mobile().set("server.max_connections", "4").start().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(stream);
    }
    let mut fifth = TcpStream::connect(stack.bff.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await;
    let closed = closed_within(&mut fifth, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the fifth connection was left hanging");
    // One let go, a new one is served.
    drop(held.pop());
    let served = common::eventually(Duration::from_secs(10), || async {
        let Ok(mut stream) = TcpStream::connect(stack.bff.addr).await else { return false };
        if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200"))
    })
    .await;
    assert!(served, "no connection was served after one was released");
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let stack = mobile().start().await;
    let big = "x".repeat(20_000);
    let response = stack.http.get(stack.bff.url("/healthz")).header("x-big", big).send().await.unwrap();
    assert_eq!(response.status(), 431);
    let mut request = stack.http.get(stack.bff.url("/healthz"));
    for i in 0..120 {
        request = request.header(format!("x-h{i}"), "1");
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    assert_eq!(stack.http.get(stack.bff.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn on_sigterm_readiness_fails_first_then_in_flight_requests_finish() {
    let stack = mobile().set("server.drain_delay", "2s").start().await;
    let gateway = stack.gateway.clone();
    stack.set_faults(Service::Users, latency(600)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<Signal>();
    let router = bff_mobile::app(&gateway).unwrap();
    let server = tokio::spawn(async move {
        let shutdown = async move { rx.await.unwrap_or(Signal::Terminate) };
        gateway.serve(listener, Some(admin), router, shutdown).await
    });
    let ready = |http: reqwest::Client| async move {
        http.get(format!("http://{admin_addr}/readyz")).send().await.map(|r| r.status().as_u16())
    };
    assert_eq!(ready(stack.http.clone()).await.unwrap(), 200);
    // A slow request in flight, then SIGTERM.
    let slow = {
        let request = stack.http.get(format!("http://{addr}/mobile/home")).bearer_auth(stack.token());
        tokio::spawn(request.send())
    };
    // In flight: the slow users call has reached the mock.
    assert!(common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Users).in_flight == 1 }).await);
    tx.send(Signal::Terminate).unwrap();
    // Readiness fails at once while requests are still served, for the drain delay.
    assert!(
        common::eventually(Duration::from_secs(2), || async { ready(stack.http.clone()).await.ok() == Some(503) })
            .await
    );
    let during = stack.http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(during.status(), 200);
    // The request in flight finishes with its answer, and the server stops after the delay.
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    timeout(Duration::from_secs(30), server).await.expect("stopped after the drain").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
