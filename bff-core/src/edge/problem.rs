//! Problem details as the client sees them: the request id in every problem+json body, and
//! axum's bare `405` turned into one.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
use crate::identity::REQUEST_ID_HEADER;
use crate::middleware::Filter;
use crate::problem::{ErrorReport, Problem};

/// Errors are made without the request id (no task-local state); it is added here.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProblemDetails;

impl Filter for ProblemDetails {
    type State = Option<HeaderValue>;

    fn on_request(&self, request: &mut Request) -> Result<Option<HeaderValue>, Response> {
        Ok(request.headers().get(&REQUEST_ID_HEADER).cloned())
    }

    fn on_response(id: Option<HeaderValue>, response: &mut Response) {
        problem_for_bare_405(response);
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

/// axum answers an unsupported method with an empty 405; give it the problem+json body.
fn problem_for_bare_405(response: &mut Response) {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.extensions().get::<ErrorReport>().is_some() {
        return;
    }
    let mut problem = BffError::MethodNotAllowed.into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    *response = problem;
}
