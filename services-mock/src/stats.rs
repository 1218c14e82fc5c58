//! Request statistics: how many requests a service served, how many at once, the last request's
//! headers, HTTP version and path, and the trace context (`traceparent`) of the latest ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

/// A snapshot of one service's counters, as `GET /_stats` returns it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatsSnapshot {
    /// Business requests received since start or the last reset.
    pub requests: u64,
    /// Requests being served right now.
    pub in_flight: u64,
    /// The highest `in_flight` seen since start or the last reset.
    pub max_in_flight: u64,
    /// The headers of the last business request, names lower-case.
    pub last_headers: BTreeMap<String, String>,
    /// The HTTP version of the last business request (`HTTP/1.1`, `HTTP/2.0`); empty before one.
    pub last_version: String,
    /// The path and query of the last business request, as it arrived; `None` before one.
    pub last_path: Option<String>,
    /// TCP connections accepted since start or the last reset.
    pub connections: u64,
    /// The `traceparent` of each business request that had one, oldest first: the last
    /// [`MAX_TRACEPARENTS`] since start or the last reset.
    pub traceparents: Vec<String>,
}

/// The most `traceparent`s [`StatsSnapshot::traceparents`] keeps.
pub const MAX_TRACEPARENTS: usize = 64;

/// The live counters of one service.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Mutex<StatsSnapshot>>);

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut StatsSnapshot) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.with(|s| s.clone())
    }

    /// Zeroes the counters; requests still in flight stay counted as in flight.
    pub fn reset(&self) {
        self.with(|s| {
            s.requests = 0;
            s.max_in_flight = s.in_flight;
            s.last_headers.clear();
            s.last_version.clear();
            s.last_path = None;
            s.connections = 0;
            s.traceparents.clear();
        });
    }

    /// Counts an accepted connection.
    pub(crate) fn connection_accepted(&self) {
        self.with(|s| s.connections += 1);
    }
}

/// Decrements `in_flight` when the request ends, including when the client goes away mid-request.
struct InFlight(Stats);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.with(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}

pub(crate) async fn track(State(stats): State<Stats>, request: Request, next: Next) -> Response {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let version = format!("{:?}", request.version());
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned());
    let traceparent = request.headers().get("traceparent").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    stats.with(|s| {
        s.requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.last_headers = headers;
        s.last_version = version;
        s.last_path = path;
        if let Some(traceparent) = traceparent {
            if s.traceparents.len() == MAX_TRACEPARENTS {
                s.traceparents.remove(0);
            }
            s.traceparents.push(traceparent);
        }
    });
    let _guard = InFlight(stats);
    next.run(request).await
}

pub(crate) async fn stats_get(State(stats): State<Stats>) -> Json<StatsSnapshot> {
    Json(stats.snapshot())
}

pub(crate) async fn stats_delete(State(stats): State<Stats>) -> StatusCode {
    stats.reset();
    StatusCode::NO_CONTENT
}
