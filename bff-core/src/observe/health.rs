//! `GET /healthz` (the process is alive) and `GET /readyz` (it should get traffic: not
//! shutting down, and every upstream reachable).
//!
//! `/readyz` answers from a probe made at most every 2 s (`PROBE_INTERVAL`): however often it is
//! asked, the upstreams see at most one TCP connection each per interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a readiness probe waits for one TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a probe's result is served before the next `/readyz` probes again.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// What `/readyz` answers from: the dependencies to probe, the last probe, and whether the
/// process is draining.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    dependencies: Vec<(String, url::Url)>,
    draining: AtomicBool,
    /// The last probe and when it was made; the lock also makes concurrent askers share one probe.
    last: tokio::sync::Mutex<Option<(Instant, Arc<Probe>)>>,
}

#[derive(Debug, Serialize)]
struct Probe {
    ready: bool,
    upstreams: BTreeMap<String, &'static str>,
}

impl Readiness {
    /// Probes `dependencies` (a name and a URL each).
    pub(crate) fn new(dependencies: Vec<(String, url::Url)>) -> Self {
        Self(Arc::new(Inner { dependencies, ..Inner::default() }))
    }

    /// From now on `/readyz` answers 503: the process is shutting down.
    pub(crate) fn drain(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    async fn probe(&self) -> Arc<Probe> {
        let mut last = self.0.last.lock().await;
        if let Some((at, probe)) = &*last
            && at.elapsed() < PROBE_INTERVAL
        {
            return probe.clone();
        }
        let probes = self.0.dependencies.iter().map(|(name, url)| async move { (name.clone(), reachable(url).await) });
        // An upstream with several instances is up while any of them is.
        let mut up_by_name = BTreeMap::<String, bool>::new();
        for (name, up) in futures::future::join_all(probes).await {
            *up_by_name.entry(name).or_default() |= up;
        }
        let ready = up_by_name.values().all(|up| *up);
        let upstreams = up_by_name.into_iter().map(|(name, up)| (name, if up { "up" } else { "down" })).collect();
        let probe = Arc::new(Probe { ready, upstreams });
        *last = Some((Instant::now(), probe.clone()));
        probe
    }
}

pub(crate) async fn healthz() -> ([(HeaderName, HeaderValue); 1], Bytes) {
    let json = HeaderValue::from_static("application/json");
    ([(CONTENT_TYPE, json)], Bytes::from_static(br#"{"status":"ok"}"#))
}

async fn reachable(url: &url::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((host, port))).await, Ok(Ok(_)))
}

pub(crate) async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<Value>) {
    if readiness.0.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    let probe = readiness.probe().await;
    let status = if probe.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if probe.ready { "ready" } else { "not_ready" }, "upstreams": probe.upstreams });
    (status, Json(body))
}
