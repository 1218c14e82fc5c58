//! The edge middleware: request id in and out, request context, degraded header, access log.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::BffError;
use crate::middleware::{Inner, Middleware, run};
use crate::observe::metrics::Metrics;
use crate::problem::{ErrorReport, ErrorSource, Problem};
use crate::request::{DEGRADED, REQUEST_ID, RequestMeta, RoutePolicies};

/// The longest request id we accept from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

fn accepted_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

/// The edge: request id, request context, span, access log, metrics, panics and bare 405s.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) policies: RoutePolicies,
    pub(crate) metrics: Metrics,
}

impl Middleware for Edge {
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        edge(self.clone(), request, inner)
    }
}

async fn edge<S: Inner>(Edge { policies, metrics }: Edge, mut request: Request, next: S) -> Response {
    let start = Instant::now();
    let id = match request.headers().get(REQUEST_ID) {
        Some(value) if accepted_request_id(value) => value.clone(),
        _ => new_request_id(),
    };
    let meta = Arc::new(RequestMeta {
        id: id.clone(),
        route: OnceLock::new(),
        start,
        policies,
        degraded: Mutex::new(Vec::new()),
    });
    let method = request.method().clone();
    request.extensions_mut().insert(meta.clone());

    let span = tracing::info_span!(
        "request",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %request.method(),
        path = %request.uri().path(),
    );
    // A panicking handler is our bug: it still gets a request id, a log line and a 500 problem,
    // and the connection and server live on.
    let handled = async move {
        match AssertUnwindSafe(run(next, request)).catch_unwind().await {
            Ok(response) => problem_for_bare_405(response),
            Err(panic) => panic_response(panic),
        }
    };
    let mut response = handled.instrument(span.clone()).await;
    with_request_id(&mut response, &id);

    let degraded = meta.degraded.lock().unwrap_or_else(|e| e.into_inner()).join(", ");
    // A degradation describes an answer's content; an error response has none.
    let failed = response.extensions().get::<ErrorReport>().is_some();
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID), id);
    if !degraded.is_empty()
        && !failed
        && let Ok(value) = HeaderValue::try_from(degraded.as_str())
    {
        headers.insert(HeaderName::from_static(DEGRADED), value);
    }
    log_access(&span, &response, start, &degraded);
    let route = meta.route.get().map_or("unmatched", |path| path.as_str());
    metrics.request(route, &method, response.status().as_u16(), start.elapsed());
    response
}

/// Renders a problem body again with the request id in it (errors are made without it).
fn with_request_id(response: &mut Response, id: &HeaderValue) {
    let Some(problem) = response.extensions_mut().get_mut::<Problem>() else { return };
    if problem.request_id.is_some() {
        return;
    }
    problem.request_id = id.to_str().ok().map(str::to_owned);
    let body = problem.body();
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = axum::body::Body::from(body);
}

/// A fresh UUID v4 as a header value, formatted on the stack.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The detail goes to the log (via the error report), the client gets a plain 500.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_owned());
    BffError::Internal(format!("handler panicked: {message}").into()).into_response()
}

/// axum answers an unsupported method with an empty 405; give it the problem+json body.
fn problem_for_bare_405(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.extensions().get::<ErrorReport>().is_some() {
        return response;
    }
    let mut problem = BffError::MethodNotAllowed.into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}

/// The access log line; the request span around it carries the id, method and path.
fn log_access(span: &tracing::Span, response: &Response, start: Instant, degraded: &str) {
    let _enter = span.enter();
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    match response.extensions().get::<ErrorReport>() {
        Some(report) if report.source == ErrorSource::Internal => {
            tracing::error!(status, latency_ms, code = report.code, error = %report.message, "request failed")
        }
        Some(report) => {
            tracing::warn!(status, latency_ms, code = report.code, error = %report.message, "request refused")
        }
        None if !degraded.is_empty() => {
            tracing::warn!(status, latency_ms, degraded, "request served degraded")
        }
        None => tracing::info!(status, latency_ms, "request served"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(accepted_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!accepted_request_id(&HeaderValue::from_static("")));
        assert!(!accepted_request_id(&HeaderValue::from_static("has space")));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!accepted_request_id(&HeaderValue::try_from(long).unwrap()));
    }

    #[test]
    fn generated_request_ids_are_fresh_uuids_we_would_accept() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
        assert!(accepted_request_id(&a));
    }
}
