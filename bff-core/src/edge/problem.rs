//! Problem details as the client sees them: the request id in every problem+json body, and a
//! refusal of the router's or a handler's in plain text or with no body (axum's bare `405`, its
//! extractors' refusals) made one.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::FutureExt as _;
use http_body_util::BodyExt as _;

use crate::identity::REQUEST_ID_HEADER;
use crate::middleware::{Filter, Filtered};
use crate::problem::{ErrorReport, ErrorSource, MAX_DETAIL_BYTES, Problem};

/// Errors are made without the request id (no task-local state); it is added here.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProblemDetails;

impl Filter for ProblemDetails {
    type State = Option<HeaderValue>;

    fn on_request(&self, request: &mut Request) -> Result<Option<HeaderValue>, Response> {
        Ok(request.headers().get(&REQUEST_ID_HEADER).cloned())
    }

    fn on_response(id: Option<HeaderValue>, response: &mut Response) {
        if let Some(id) = id {
            with_request_id(response, &id);
        }
    }
}

/// Renders a problem body again with the request id in it.
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

/// The router of a BFF's routes (or the admin endpoints), its refusals made problems.
pub(crate) type ProblemRouter = Filtered<BareRefusals, Router>;

/// `router`, with [`BareRefusals`] around it.
pub(crate) fn with_problems(router: Router) -> ProblemRouter {
    tower::Layer::layer(&crate::middleware::FilterLayer(BareRefusals), router)
}

/// A refusal of the router's or a handler's in plain text or with no body made a problem
/// document, as every other refusal is: axum's bare `405` (its `Allow` kept), what axum's own
/// extractors answer (`axum::Json`, `axum::extract::Query`, … where a handler takes them rather
/// than `bff_core::extract`'s), or a handler's `(StatusCode, String)`. A 4xx keeps its text as
/// the detail (else its status's name); a 5xx's text goes to the log only (it may tell what a
/// client should not read). The answer's other headers are kept (`Allow`, `Retry-After`, …). An
/// answer in any other type (JSON of the handler's own design, a page) is the handler's choice
/// and left alone. Around the router only: a passthrough route's answers are its upstream's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BareRefusals;

impl Filter for BareRefusals {
    type State = ();

    fn on_request(&self, _request: &mut Request) -> Result<(), Response> {
        Ok(())
    }

    fn on_response((): (), response: &mut Response) {
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error())
            || response.extensions().get::<ErrorReport>().is_some()
        {
            return;
        }
        let plain = match response.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(kind) => kind.as_bytes().get(..10).is_some_and(|k| k.eq_ignore_ascii_case(b"text/plain")),
        };
        if plain {
            *response = as_problem(std::mem::take(response));
        }
    }
}

/// The longest plain-text refusal read for its detail; a longer one is not read.
const MAX_REFUSAL_TEXT: u64 = 16 * 1024;

/// `refusal`, in plain text (or none), as a problem document with the same status and headers.
fn as_problem(refusal: Response) -> Response {
    let (mut parts, body) = refusal.into_parts();
    // A refusal's text is a whole body in memory (axum's are): read now, or not at all.
    let small = http_body::Body::size_hint(&body).upper().is_some_and(|n| n <= MAX_REFUSAL_TEXT);
    let text = match small.then(|| body.collect().now_or_never()).flatten() {
        Some(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
        _ => String::new(),
    };
    let status = parts.status;
    let code = code_of(status);
    let (detail, source) = match status.is_client_error() {
        true if !text.is_empty() => (text.clone(), ErrorSource::Downstream),
        true => (status.canonical_reason().unwrap_or("refused").to_lowercase(), ErrorSource::Downstream),
        false => ("the gateway failed to handle this request".to_owned(), ErrorSource::of(status)),
    };
    let said = if text.is_empty() { format!("a bare {status}") } else { format!("{status} in plain text: {text}") };
    let message = crate::problem::bounded(&said, 4 * MAX_DETAIL_BYTES);
    let mut problem = Problem::new(status, code, detail).into_response_with(ErrorReport { code, message, source });
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in parts.headers.drain().filter_map(|(name, value)| Some((name?, value))) {
        problem.headers_mut().insert(name, value);
    }
    problem
}

/// The code of a refusal by its status alone.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::PAYLOAD_TOO_LARGE => "BODY_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_CONTENT",
        StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
        s if s.is_client_error() => "REFUSED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    }
}
