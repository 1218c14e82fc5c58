//! Headers every call carries, set from its [`CallContext`] rather than by the transport.

use http::Request;

use super::Body;
use super::stack::CallContext;
use crate::request::REQUEST_ID_HEADER;

/// Sets `X-Request-Id` from the call's context (unless the call set its own).
pub(crate) fn set_call_headers(mut request: Request<Body>) -> Request<Body> {
    if let Some(context) = request.extensions().get::<CallContext>()
        && !request.headers().contains_key(&REQUEST_ID_HEADER)
    {
        let id = context.request_id.clone();
        request.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    request
}
