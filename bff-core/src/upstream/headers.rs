//! Headers every call carries, set from its [`CallContext`](super::CallContext) rather than by
//! the transport: the request id, what is left of the request's deadline, and the caller's
//! identity, which replaces any identity header the call had.

use std::cell::RefCell;

use bytes::Bytes;
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
/// `X-Request-Deadline-Ms` (what is left at `now`), and the identity headers of its caller
/// (always: a call cannot speak for someone else). The journal (`upstream/journal.rs`) calls it
/// for each attempt, so a retry carries what is left then, and sets the trace headers, with the
/// attempt's own span, after.
pub(crate) fn set_call_headers(call: &mut Outgoing, now: Instant) {
    let context = &call.context;
    let headers = call.request.headers_mut();
    // First, while the call's own headers may still be none (it then has nothing to remove).
    CallerHeaders::apply(context.caller.as_ref(), headers);
    // One lookup, where `contains_key` then `insert` hash the name twice.
    headers.entry(REQUEST_ID_HEADER).or_insert_with(|| context.request_id.clone());
    let left = context.deadline.saturating_duration_since(now);
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    headers.insert(DEADLINE_MS, millis(left_ms));
}

thread_local! {
    /// The last deadline value this thread made. The calls of a fan-out leave together with the
    /// same milliseconds left, so they share one value rather than each formatting its own.
    static LAST_MILLIS: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// `ms` as a header value: the one made last on this thread when it is the same number, else a
/// new one in one allocation that its copies share (`HeaderValue::from(u64)` grows a buffer, then
/// freezes it into a second).
fn millis(ms: u64) -> HeaderValue {
    LAST_MILLIS.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return Digits::value(ms);
        };
        match &*last {
            Some((made, value)) if *made == ms => value.clone(),
            _ => {
                let value = Digits::value(ms);
                *last = Some((ms, value.clone()));
                value
            }
        }
    })
}

/// The decimal digits of a number, held inline: the owner of a shared header value.
struct Digits {
    buf: [u8; 20],
    len: usize,
}

impl Digits {
    /// `ms` as a header value in one allocation that its copies share.
    fn value(ms: u64) -> HeaderValue {
        let mut formatter = itoa::Buffer::new();
        let text = formatter.format(ms).as_bytes();
        let mut digits = Digits { buf: [0; 20], len: text.len() };
        // A u64 has at most 20 digits.
        if let Some(buf) = digits.buf.get_mut(..text.len()) {
            buf.copy_from_slice(text);
        }
        HeaderValue::from_maybe_shared(Bytes::from_owner(digits)).unwrap_or_else(|_| HeaderValue::from(ms))
    }
}

impl AsRef<[u8]> for Digits {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
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

    #[test]
    fn the_same_milliseconds_share_one_value_and_another_number_makes_its_own() {
        let (a, b) = (millis(1999), millis(1999));
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr(), "one value, shared");
        let c = millis(1998);
        assert_eq!(c, "1998");
        assert_ne!(c.as_bytes().as_ptr(), a.as_bytes().as_ptr());
        assert_eq!(a, "1999", "a later number leaves an earlier value as it was");
    }
}
