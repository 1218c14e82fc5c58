//! The request context: id, deadline and degradations, established once at the edge.
//!
//! [`Ctx`] is the extractor a handler takes to run its fan-out; the edge creates what it reads.

pub mod idempotency;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use tokio::time::Instant;

use crate::problem::Problem;

/// The header carrying the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name: a lookup by it does not parse the name again.
pub(crate) const REQUEST_ID_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static(REQUEST_ID);
/// The header listing the optional parts that failed and were left out.
pub const DEGRADED: &str = "x-bff-degraded";

/// What the edge knows about one request, shared with the handler and the fan-out.
#[derive(Debug)]
pub(crate) struct RequestMeta {
    pub(crate) id: HeaderValue,
    /// The matched route pattern, set by a route layer (the edge runs before routing).
    pub(crate) route: std::sync::OnceLock<MatchedPath>,
    pub(crate) start: Instant,
    pub(crate) policies: RoutePolicies,
    pub(crate) degraded: Mutex<Vec<String>>,
}

impl RequestMeta {
    /// When the request must be answered by: its route's deadline, or the default one.
    pub(crate) fn deadline(&self, route: Option<&MatchedPath>) -> Instant {
        let policies = &self.policies;
        let budget = route.and_then(|path| policies.deadlines.get(path.as_str())).copied();
        self.start + budget.unwrap_or(policies.default_deadline)
    }
}

/// Per-route settings the edge hands to every request.
#[derive(Debug, Clone)]
pub(crate) struct RoutePolicies {
    pub(crate) default_deadline: Duration,
    pub(crate) deadlines: Arc<HashMap<String, Duration>>,
    pub(crate) concurrency: usize,
}

/// The context of one request: its id, its deadline, and where degradations are recorded.
///
/// Take it as a handler argument, then run the fan-out with [`Ctx::fanout`].
#[derive(Debug, Clone)]
pub struct Ctx {
    meta: Arc<RequestMeta>,
    deadline: Instant,
    concurrency: usize,
}

impl Ctx {
    /// The request id, sent on every upstream call.
    pub fn request_id(&self) -> &HeaderValue {
        &self.meta.id
    }

    /// When the whole request must be answered by.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What is left of the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The concurrency cap of homogeneous fan-outs.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Records that an optional part (`label`) failed and was left out of the answer.
    pub fn degrade(&self, label: impl Into<String>) {
        let label = label.into();
        let mut degraded = self.meta.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if !degraded.contains(&label) {
            degraded.push(label);
        }
    }

    /// The labels recorded by [`Ctx::degrade`] so far.
    pub fn degraded(&self) -> Vec<String> {
        self.meta.degraded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A context outside any server, for tests and benchmarks of handlers and fan-outs.
    pub fn detached(deadline: Duration, concurrency: usize) -> Self {
        let meta = RequestMeta {
            id: HeaderValue::from_static("detached"),
            route: std::sync::OnceLock::new(),
            start: Instant::now(),
            policies: RoutePolicies {
                default_deadline: deadline,
                deadlines: Arc::default(),
                concurrency: concurrency.max(1),
            },
            degraded: Mutex::new(Vec::new()),
        };
        Self { meta: Arc::new(meta), deadline: Instant::now() + deadline, concurrency: concurrency.max(1) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let missing = || {
            let detail = "the gateway failed to handle this request (Ctx on a router not built by Gateway::router)";
            Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", detail)
        };
        let meta = parts.extensions.get::<Arc<RequestMeta>>().ok_or_else(missing)?.clone();
        let deadline = meta.deadline(parts.extensions.get::<MatchedPath>());
        let concurrency = meta.policies.concurrency;
        Ok(Self { deadline, meta, concurrency })
    }
}
