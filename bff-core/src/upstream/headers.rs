//! Headers every call carries, set from its [`CallContext`] rather than by the transport.

use http::Request;

use super::Body;
use super::stack::CallContext;
use crate::request::REQUEST_ID_HEADER;

/// Sets `X-Request-Id` from the call's context (unless the call set its own).
pub(crate) fn set_call_headers(mut request: Request<Body>) -> Request<Body> {
    if let Some(context) = request.extensions().get::<CallContext>() {
        let id = context.request_id.clone();
        // One lookup, where `contains_key` then `insert` hash the name twice.
        request.headers_mut().entry(REQUEST_ID_HEADER).or_insert(id);
    }
    request
}
