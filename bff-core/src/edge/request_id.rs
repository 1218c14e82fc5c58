//! Every request has an `X-Request-Id`: the client's when it is short and plain, a fresh UUID
//! otherwise; the response carries it back.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;

use crate::identity::REQUEST_ID_HEADER;
use crate::middleware::Filter;

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

/// Sets the request id on the request (for the layers, handlers and upstream calls inside) and
/// on the response.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestIds;

impl Filter for RequestIds {
    type State = HeaderValue;

    fn on_request(&self, request: &mut Request) -> Result<HeaderValue, Response> {
        Ok(match request.headers().get(&REQUEST_ID_HEADER) {
            Some(id) if accepted(id) => id.clone(),
            _ => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
                id
            }
        })
    }

    fn on_response(id: HeaderValue, response: &mut Response) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
}

/// A UUID v4, in one allocation that its copies share: the request's header, the response's and
/// the request context each hold it, and a value copied from a string would be copied again the
/// first time it is cloned.
fn new_request_id() -> HeaderValue {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    HeaderValue::from_maybe_shared(Bytes::from_owner(id)).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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
        let id = RequestIds.on_request(&mut request).expect("never refused");
        assert_ne!(id, "has space");
        assert_eq!(request.headers()[&REQUEST_ID_HEADER], id, "the replacement is what the inside sees");
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
