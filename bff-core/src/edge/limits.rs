//! Request limits checked before anything else reads the request: a URI longer than
//! `server.max_uri_bytes` is a 414 problem. (The head and header count are hyper's, in
//! `serve`; the body, per route, is `extract::Json`'s.)

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
use crate::middleware::Filter;

/// Refuses requests over the limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_uri_bytes: usize,
}

impl Filter for Limits {
    type State = ();

    fn on_request(&self, request: &mut Request) -> Result<(), Response> {
        let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if length <= self.max_uri_bytes {
            return Ok(());
        }
        let detail = format!("the URI is {length} bytes; the limit is {}", self.max_uri_bytes);
        Err(BffError::Rejected { status: StatusCode::URI_TOO_LONG, code: "URI_TOO_LONG", detail }.into_response())
    }
}
