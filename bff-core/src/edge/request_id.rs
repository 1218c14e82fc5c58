//! Which request ids a client may choose, and fresh ones for the rest.

use axum::extract::Request;
use axum::http::HeaderValue;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::request::REQUEST_ID_HEADER;

/// The longest request id we accept from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id is kept: short, and of characters safe in logs and headers.
fn accepted(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

/// Removes a request id the client sent that we do not accept, so a fresh one replaces it.
pub(super) fn drop_unacceptable(mut request: Request) -> Request {
    if request.headers().get(&REQUEST_ID_HEADER).is_some_and(|id| !accepted(id)) {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

/// Makes a UUID v4 request id, formatted on the stack.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewUuid;

impl MakeRequestId for NewUuid {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        Some(RequestId::new(new_request_id()))
    }
}

fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(accepted(&HeaderValue::from_static("abc-123")));
        assert!(!accepted(&HeaderValue::from_static("")));
        assert!(!accepted(&HeaderValue::from_static("has space")));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!accepted(&HeaderValue::try_from(long).unwrap()));
        let mut request = Request::new(axum::body::Body::empty());
        request.headers_mut().insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert!(drop_unacceptable(request).headers().get(&REQUEST_ID_HEADER).is_none());
    }

    #[test]
    fn generated_request_ids_are_fresh_uuids_we_would_accept() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
        assert!(accepted(&a));
    }
}
