//! Request limits checked before anything else reads the request: a URI longer than
//! `server.max_uri_bytes` is a 414 problem, and a body framed in a way the gateway cannot read is
//! refused. (The head and header count are hyper's, in `serve`; the body, per route, is
//! `extract::Json`'s.)

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
use crate::field::{self, Framing};
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
        if length > self.max_uri_bytes {
            let detail = format!("the URI is {length} bytes; the limit is {}", self.max_uri_bytes);
            return Err(
                BffError::Rejected { status: StatusCode::URI_TOO_LONG, code: "URI_TOO_LONG", detail }.into_response()
            );
        }
        // A request with no body has no framing to look at (hyper says so without a lookup).
        if http_body::Body::is_end_stream(request.body()) {
            return Ok(());
        }
        transfer_codings(request.headers()).map_err(IntoResponse::into_response)
    }
}

/// A body the gateway can read (`crate::field::transfer_codings`): a coding it does not decode is
/// a 501 (RFC 9112 §6.1, as nginx answers); `chunked` twice, or a value that is not text, a 400.
/// HTTP/2 has no such header: its framing layer refuses one.
fn transfer_codings(headers: &HeaderMap) -> Result<(), BffError> {
    match field::transfer_codings(headers) {
        Ok(()) => Ok(()),
        Err(Framing::Unsupported(coding)) => {
            let detail = format!(
                "`Transfer-Encoding: {coding}` is not supported: send the body with `chunked` alone \
                 (a compressed body says so with `Content-Encoding`)"
            );
            let (status, code) = (StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED_TRANSFER_CODING");
            Err(BffError::Rejected { status, code, detail })
        }
        Err(invalid) => Err(BffError::bad_request("INVALID_TRANSFER_ENCODING", invalid.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::http::header::TRANSFER_ENCODING;

    use super::*;

    /// A coding not read is a 501 naming it; `chunked` twice a 400; `chunked` alone passes.
    #[test]
    fn a_coding_not_read_is_a_501_naming_it() {
        let refused = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_str(value).unwrap());
            transfer_codings(&headers).map_err(|e| (e.status(), e.code(), e.to_string()))
        };
        assert_eq!(refused("chunked"), Ok(()));
        let (status, code, detail) = refused("br, chunked").unwrap_err();
        assert_eq!((status, code), (StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED_TRANSFER_CODING"));
        assert!(detail.starts_with("`Transfer-Encoding: br` is not supported"), "{detail}");
        let (status, code, _) = refused("chunked, chunked").unwrap_err();
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, "INVALID_TRANSFER_ENCODING"));
    }
}
