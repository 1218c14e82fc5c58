//! Fault injection: latency, jitter, errors, hangs, malformed bodies and connection resets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::server::ConnectionKill;

/// The faults a service injects into every business request (admin endpoints are exempt).
///
/// Every field is optional in JSON; a missing field means "no such fault".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fixed delay before answering, in milliseconds.
    pub latency_ms: u64,
    /// Extra random delay, uniformly drawn from `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability (0.0 to 1.0) of answering HTTP 500 instead of the real response.
    pub error_rate: f64,
    /// Never answer (the connection stays open until the client gives up).
    pub hang: bool,
    /// Answer 200 with a body that is not valid JSON.
    pub malformed: bool,
    /// Reset the TCP connection instead of answering.
    pub reset: bool,
    /// Flapping, by count: the first of every N business requests (the 1st, the N+1-th, …)
    /// answers HTTP 500 *after* it was handled: the work is done and its answer lost, the case
    /// idempotency keys exist for (0: off; 1: every request).
    pub fail_every: u64,
    /// Flapping, by time: fail (HTTP 500) for this many milliseconds, then recover for `up_ms`,
    /// and again, from when the faults were set (0: off).
    pub down_ms: u64,
    /// The healthy part of the `down_ms` cycle.
    pub up_ms: u64,
}

impl Faults {
    /// Checks the values a client sent, naming the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) || self.error_rate.is_nan() {
            return Err(format!("error_rate must be between 0.0 and 1.0, got {}", self.error_rate));
        }
        Ok(())
    }

    /// Parses `key=value[,key=value]` as given on the command line.
    pub fn parse_assignments(spec: &str) -> Result<Self, String> {
        let mut faults = Faults::default();
        for pair in spec.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let bad = |e: &dyn std::fmt::Display| format!("invalid value `{value}` for `{key}`: {e}");
            match key.trim() {
                "latency_ms" => faults.latency_ms = value.parse().map_err(|e| bad(&e))?,
                "jitter_ms" => faults.jitter_ms = value.parse().map_err(|e| bad(&e))?,
                "error_rate" => faults.error_rate = value.parse().map_err(|e| bad(&e))?,
                "hang" => faults.hang = value.parse().map_err(|e| bad(&e))?,
                "malformed" => faults.malformed = value.parse().map_err(|e| bad(&e))?,
                "reset" => faults.reset = value.parse().map_err(|e| bad(&e))?,
                "fail_every" => faults.fail_every = value.parse().map_err(|e| bad(&e))?,
                "down_ms" => faults.down_ms = value.parse().map_err(|e| bad(&e))?,
                "up_ms" => faults.up_ms = value.parse().map_err(|e| bad(&e))?,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (expected latency_ms, jitter_ms, error_rate, hang, malformed, \
                         reset, fail_every, down_ms, up_ms)"
                    ));
                }
            }
        }
        faults.validate()?;
        Ok(faults)
    }
}

/// The current faults of one service, shared by its handlers and its admin endpoints.
#[derive(Debug, Clone, Default)]
pub struct FaultState(Arc<RwLock<InForce>>);

#[derive(Debug)]
struct InForce {
    faults: Faults,
    /// When they were set: the origin of the `down_ms` / `up_ms` cycle.
    since: Instant,
    /// Business requests since they were set: for `fail_every`.
    requests: Arc<AtomicU64>,
}

impl Default for InForce {
    fn default() -> Self {
        Self { faults: Faults::default(), since: Instant::now(), requests: Arc::default() }
    }
}

impl FaultState {
    /// Starts with the given faults.
    pub fn new(faults: Faults) -> Self {
        let state = Self::default();
        state.set(faults);
        state
    }

    /// The faults in force now.
    pub fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|e| e.into_inner()).faults.clone()
    }

    /// Replaces the faults in force (and restarts the flapping cycle and count).
    pub fn set(&self, faults: Faults) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) =
            InForce { faults, since: Instant::now(), requests: Arc::default() };
    }

    /// The faults for one business request, and whether flapping fails it: (before it is
    /// handled, after).
    fn for_request(&self) -> (Faults, bool, bool) {
        let state = self.0.read().unwrap_or_else(|e| e.into_inner());
        let faults = &state.faults;
        let n = state.requests.fetch_add(1, Ordering::Relaxed);
        let by_count = faults.fail_every > 0 && n.is_multiple_of(faults.fail_every);
        let cycle = faults.down_ms + faults.up_ms;
        let by_time = faults.down_ms > 0
            && (faults.up_ms == 0 || (state.since.elapsed().as_millis() as u64) % cycle < faults.down_ms);
        (faults.clone(), by_time, by_count)
    }
}

// === admin endpoints ===

pub(crate) async fn faults_get(State(state): State<FaultState>) -> Json<Faults> {
    Json(state.get())
}

pub(crate) async fn faults_put(State(state): State<FaultState>, body: axum::body::Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("invalid faults: {e}")).into_response(),
    };
    if let Err(e) = faults.validate() {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    state.set(faults.clone());
    Json(faults).into_response()
}

pub(crate) async fn faults_delete(State(state): State<FaultState>) -> StatusCode {
    state.set(Faults::default());
    StatusCode::NO_CONTENT
}

// === middleware ===

/// Applies the service's faults to one business request.
pub(crate) async fn inject(State(state): State<FaultState>, request: Request, next: Next) -> Response {
    let (faults, down, answer_lost) = state.for_request();
    let mut delay = faults.latency_ms;
    if faults.jitter_ms > 0 {
        delay += fastrand::u64(0..=faults.jitter_ms);
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if faults.hang {
        std::future::pending::<()>().await;
    }
    if faults.reset {
        if let Some(kill) = request.extensions().get::<ConnectionKill>() {
            kill.kill();
        }
        // The connection is torn down by the server; this future is dropped with it.
        std::future::pending::<()>().await;
    }
    if down || (faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate) {
        return injected_failure();
    }
    if faults.malformed {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"truncated": [1, 2,"#))
            .unwrap_or_default();
    }
    let answer = next.run(request).await;
    if answer_lost {
        return injected_failure();
    }
    answer
}

fn injected_failure() -> Response {
    let body = r#"{"error":"injected failure"}"#;
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments() {
        let f = Faults::parse_assignments("latency_ms=100,error_rate=0.5,hang").unwrap();
        assert_eq!(f.latency_ms, 100);
        assert_eq!(f.error_rate, 0.5);
        assert!(f.hang);
        assert!(!f.reset);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_fails_every_nth_request_or_for_a_period() {
        let state = FaultState::new(Faults::parse_assignments("fail_every=3").unwrap());
        let failed: Vec<bool> = (0..6).map(|_| state.for_request().2).collect();
        assert_eq!(failed, [true, false, false, true, false, false]);
        state.set(Faults::parse_assignments("down_ms=100,up_ms=300").unwrap());
        assert!(state.for_request().1, "down first");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!state.for_request().1, "then up");
        tokio::time::advance(Duration::from_millis(299)).await;
        assert!(!state.for_request().1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(state.for_request().1, "and down again");
    }

    #[test]
    fn rejects_unknown_and_out_of_range() {
        assert!(Faults::parse_assignments("latency=1").unwrap_err().contains("unknown fault `latency`"));
        assert!(Faults::parse_assignments("error_rate=2").unwrap_err().contains("error_rate"));
        assert!(Faults::parse_assignments("latency_ms=x").unwrap_err().contains("latency_ms"));
    }

    #[test]
    fn json_fields_are_optional() {
        let f: Faults = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        assert_eq!(f, Faults { latency_ms: 5, ..Faults::default() });
        assert!(serde_json::from_str::<Faults>(r#"{"latncy_ms": 5}"#).is_err());
    }
}
