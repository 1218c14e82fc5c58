//! Headers every call carries, set from its [`CallContext`](super::CallContext) rather than by
//! the transport: the request id, what is left of the request's deadline, and the caller's
//! identity, which replaces any identity header the call had.

use http::{HeaderName, HeaderValue};
use tokio::time::Instant;

use super::outgoing::Outgoing;
use crate::identity::CallerHeaders;
use crate::identity::REQUEST_ID_HEADER;
use crate::observe::trace_context::TRACEPARENT;

/// The milliseconds left of the request's deadline when an attempt leaves, so the upstream can
/// give up when nobody will wait for its answer (as gRPC's `grpc-timeout`).
pub const DEADLINE_MS: HeaderName = HeaderName::from_static("x-request-deadline-ms");

/// The headers the stack sets on each attempt, with values of that attempt (the transport adds
/// `Host`, the instance's): a response that varies on one of them cannot be reused.
pub(crate) const PER_ATTEMPT: [HeaderName; 4] = [REQUEST_ID_HEADER, DEADLINE_MS, http::header::HOST, TRACEPARENT];

/// Sets `X-Request-Id` from the call's context (unless the call set its own),
/// `X-Request-Deadline-Ms`, and the identity headers of its caller (always: a call cannot speak
/// for someone else). It runs for each attempt, so a retry carries what is left then (the trace
/// headers, with the attempt's own span, are set by the journal: `upstream/journal.rs`).
pub(crate) fn set_call_headers(mut call: Outgoing) -> Outgoing {
    let context = &call.context;
    let headers = call.request.headers_mut();
    // One lookup, where `contains_key` then `insert` hash the name twice.
    headers.entry(REQUEST_ID_HEADER).or_insert_with(|| context.request_id.clone());
    let left = context.deadline.saturating_duration_since(Instant::now());
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    headers.insert(DEADLINE_MS, millis(left_ms));
    CallerHeaders::apply(context.caller.as_ref(), headers);
    call
}

/// `ms` as a header value in one allocation (`HeaderValue::from(u64)` grows a buffer, then
/// freezes it into a second).
fn millis(ms: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    HeaderValue::from_str(digits.format(ms)).unwrap_or_else(|_| HeaderValue::from(ms))
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn millis_are_the_decimal_number() {
        for ms in [0, 7, 1500, u64::MAX] {
            assert_eq!(millis(ms), http::HeaderValue::from(ms));
        }
    }
}
