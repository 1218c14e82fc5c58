//! Fan-out semantics on the paused clock, with in-memory upstreams.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::UpstreamProtocol;
use crate::error::BffError;
use crate::observe::metrics::Metrics;
use crate::request::Ctx;
use crate::upstream::{Body, Upstream, UpstreamError, UpstreamErrorKind, UpstreamSettings};

type Request = http::Request<Body>;

/// A `200` with `body`.
fn ok(body: impl Into<Bytes>) -> http::Response<Body> {
    http::Response::new(Body::from(body.into()))
}

/// An upstream over `service` whose attempts time out after `timeout`.
fn upstream<S, F>(name: &str, timeout: Duration, service: S) -> Upstream
where
    S: FnMut(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<http::Response<Body>, UpstreamError>> + Send + 'static,
{
    upstream_with(name, UpstreamSettings { timeout, ..UpstreamSettings::bare() }, service)
}

fn upstream_with<S, F>(name: &str, settings: UpstreamSettings, service: S) -> Upstream
where
    S: FnMut(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<http::Response<Body>, UpstreamError>> + Send + 'static,
{
    Upstream::from_service(name, settings, tower::service_fn(service), &Metrics::new())
}

#[derive(Clone, Copy)]
enum Behaviour {
    Answer(u64),
    Fail(u64),
    Hang,
}

/// An upstream that waits `ms` then answers `{"path": ...}`, or fails, or never answers.
fn fake(name: &'static str, behaviour: Behaviour, dropped: Arc<AtomicUsize>) -> Upstream {
    fake_over(name, UpstreamProtocol::Http1, behaviour, dropped)
}

fn fake_over(
    name: &'static str,
    protocol: UpstreamProtocol,
    behaviour: Behaviour,
    dropped: Arc<AtomicUsize>,
) -> Upstream {
    let service = move |request: Request| {
        let dropped = dropped.clone();
        async move {
            struct Guard(Arc<AtomicUsize>, bool);
            impl Drop for Guard {
                fn drop(&mut self) {
                    if !self.1 {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            let mut guard = Guard(dropped, false);
            let result = match behaviour {
                Behaviour::Answer(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(ok(format!(r#"{{"path":"{}"}}"#, request.uri())))
                }
                Behaviour::Fail(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let mut failed = ok("{}");
                    *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(failed)
                }
                Behaviour::Hang => std::future::pending().await,
            };
            guard.1 = true;
            result
        }
    };
    let settings = UpstreamSettings { timeout: Duration::from_secs(60), protocol, ..UpstreamSettings::bare() };
    upstream_with(name, settings, service)
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[tokio::test(start_paused = true)]
async fn parts_run_in_parallel() {
    let ctx = Ctx::detached(Duration::from_secs(2), 8);
    let d = counter();
    let (a, b, c) = (
        fake("a", Behaviour::Answer(100), d.clone()),
        fake("b", Behaviour::Answer(100), d.clone()),
        fake("c", Behaviour::Answer(100), d.clone()),
    );
    let start = Instant::now();
    let (x, y, z) = ctx
        .fanout((a.get::<Value>("/a").required(), b.get::<Value>("/b").required(), c.get::<Value>("/c").optional()))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!((x["path"].as_str(), y["path"].as_str()), (Some("/a"), Some("/b")));
    assert_eq!(z.unwrap()["path"], "/c");
    assert!(ctx.degraded().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failed_optional_part_degrades() {
    let ctx = Ctx::detached(Duration::from_secs(2), 8);
    let d = counter();
    let (users, notes) =
        (fake("users", Behaviour::Answer(10), d.clone()), fake("notifications", Behaviour::Fail(5), d));
    let (user, badge) =
        ctx.fanout((users.get::<Value>("/u").required(), notes.get::<Value>("/n").optional())).await.unwrap();
    assert_eq!(user["path"], "/u");
    assert!(badge.is_none());
    assert_eq!(ctx.degraded(), vec!["notifications".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn failed_required_part_fails_fast_and_the_rest_finish_or_are_cancelled() {
    for (protocol, cancelled) in [(UpstreamProtocol::Http1, 0), (UpstreamProtocol::Http2, 1)] {
        let ctx = Ctx::detached(Duration::from_secs(2), 8);
        let dropped = counter();
        let users = fake_over("users", protocol, Behaviour::Fail(10), dropped.clone());
        let orders = fake_over("orders", protocol, Behaviour::Answer(1_000), dropped.clone());
        let start = Instant::now();
        let fanout = ctx.fanout((users.get::<Value>("/u").required(), orders.get::<Value>("/o").required()));
        let err = fanout.await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(10), "{protocol:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.problem().service.as_deref(), Some("users"));
        // Over HTTP/1.1 the abandoned orders call finishes in the background (its connection
        // goes back to the pool); over HTTP/2 it is cancelled at once.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), cancelled, "{protocol:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn hanging_optional_part_costs_at_most_the_deadline() {
    let ctx = Ctx::detached(Duration::from_millis(300), 8);
    let d = counter();
    let (users, notes) = (fake("users", Behaviour::Answer(10), d.clone()), fake("notifications", Behaviour::Hang, d));
    let start = Instant::now();
    let (_, badge) =
        ctx.fanout((users.get::<Value>("/u").required(), notes.get::<Value>("/n").optional())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(badge.is_none());
    assert_eq!(ctx.degraded(), vec!["notifications".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn hanging_required_part_is_a_504_at_the_deadline() {
    let ctx = Ctx::detached(Duration::from_millis(300), 8);
    let users = fake("users", Behaviour::Hang, counter());
    let start = Instant::now();
    let err = ctx.fetch(users.get::<Value>("/u")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(err.code(), "UPSTREAM_TIMEOUT");
}

#[tokio::test(start_paused = true)]
async fn the_upstream_timeout_applies_inside_the_deadline() {
    let ctx = Ctx::detached(Duration::from_secs(2), 8);
    let slow = |_: Request| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(ok("{}"))
    };
    let upstream = upstream("slow", Duration::from_millis(250), slow);
    let start = Instant::now();
    let err = ctx.fetch(upstream.get::<Value>("/")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert!(matches!(err, BffError::Upstream(ref e) if e.is_timeout()));
}

#[tokio::test(start_paused = true)]
async fn a_dependent_fanout_gets_only_what_is_left() {
    let ctx = Ctx::detached(Duration::from_millis(500), 8);
    let d = counter();
    let first = fake("orders", Behaviour::Answer(400), d.clone());
    let second = fake("catalog", Behaviour::Answer(400), d);
    let start = Instant::now();
    ctx.fetch(first.get::<Value>("/o")).await.unwrap();
    let products = ctx.fanout((second.get::<Value>("/p").optional(),)).await.unwrap().0;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert!(products.is_none());
}

#[tokio::test(start_paused = true)]
async fn fanout_all_respects_the_cap_and_the_order() {
    let ctx = Ctx::detached(Duration::from_secs(5), 3);
    let (now, max) = (counter(), counter());
    let service = {
        let (now, max) = (now.clone(), max.clone());
        move |request: Request| {
            let (now, max) = (now.clone(), max.clone());
            async move {
                let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                if request.uri().path() == "/5" {
                    return Err(UpstreamError::new(Arc::from("catalog"), UpstreamErrorKind::Transport));
                }
                Ok(ok(request.uri().path().trim_start_matches('/').to_owned()))
            }
        }
    };
    let catalog = upstream("catalog", Duration::from_secs(1), service);
    let parts = (0..10).map(|i| catalog.get::<u32>(format!("/{i}")).optional_as(format!("catalog:{i}")));
    let start = Instant::now();
    let results = ctx.fanout_all(parts).await.unwrap();
    assert_eq!(max.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    let expected: Vec<Option<u32>> = (0..10).map(|i| (i != 5).then_some(i)).collect();
    assert_eq!(results, expected);
    assert_eq!(ctx.degraded(), vec!["catalog:5".to_owned()]);
}
