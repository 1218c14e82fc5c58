//! `GET /healthz` (the process is alive) and `GET /readyz` (every upstream is reachable).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// How long a readiness probe waits for one TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` probes: a name and a URL for each dependency.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dependencies(pub(crate) Vec<(String, url::Url)>);

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    upstreams: BTreeMap<String, &'static str>,
}

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn reachable(url: &url::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((host, port))).await, Ok(Ok(_)))
}

pub(crate) async fn readyz(State(deps): State<Dependencies>) -> (StatusCode, Json<impl Serialize>) {
    let probes = deps.0.iter().map(|(name, url)| async move { (name.clone(), reachable(url).await) });
    let results = futures::future::join_all(probes).await;
    let ready = results.iter().all(|(_, up)| *up);
    let upstreams = results.into_iter().map(|(name, up)| (name, if up { "up" } else { "down" })).collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ready" } else { "not_ready" }, upstreams }))
}
