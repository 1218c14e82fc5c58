//! Headers every call carries, set from its [`CallContext`] rather than by the transport: the
//! request id, and the caller's identity, which replaces any identity header the call had.

use http::Request;

use super::Body;
use super::stack::CallContext;
use crate::request::REQUEST_ID_HEADER;
use crate::request::caller::CallerHeaders;

/// Sets `X-Request-Id` from the call's context (unless the call set its own) and the identity
/// headers of its caller (always: a call cannot speak for someone else).
pub(crate) fn set_call_headers(request: Request<Body>) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let context = parts.extensions.get::<CallContext>();
    if let Some(context) = context {
        // One lookup, where `contains_key` then `insert` hash the name twice.
        parts.headers.entry(REQUEST_ID_HEADER).or_insert_with(|| context.request_id.clone());
    }
    CallerHeaders::apply(context.and_then(|c| c.caller.as_ref()), &mut parts.headers);
    Request::from_parts(parts, body)
}
