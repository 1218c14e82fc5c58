//! Request limits checked before anything else reads the request: a URI longer than
//! `server.max_uri_bytes` is a 414 problem. (The head and header count are hyper's, in
//! `serve`; the body, per route, is `extract::Json`'s.)

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
use crate::middleware::Guard;

/// Refuses requests over the limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_uri_bytes: usize,
}

impl Guard for Limits {
    fn refuse(&self, request: &mut Request) -> Option<Response> {
        let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if length <= self.max_uri_bytes {
            return None;
        }
        let detail = format!("the URI is {length} bytes; the limit is {}", self.max_uri_bytes);
        Some(BffError::Rejected { status: StatusCode::URI_TOO_LONG, code: "URI_TOO_LONG", detail }.into_response())
    }
}
