//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the trace a request belongs to,
//! taken from its `traceparent` when that is valid and trusted, else a new one; and the
//! `traceparent` of each upstream attempt, the same trace with the attempt's own span id, so that
//! a retried call shows as two attempts.
//!
//! A client's header never errors a request: a malformed `traceparent` (wrong length, upper-case
//! or non-hex digits, an all-zero id, version `ff`, sent twice) starts a new trace, and so does a
//! valid one when `tracing.accept_parent` does not trust its sender. `tracestate` is passed on
//! with the trace it came with, bounded: at most [`MAX_TRACESTATE_MEMBERS`] well-formed members
//! and [`MAX_TRACESTATE_BYTES`] bytes (members past either are dropped from the end, as the
//! specification allows); one that does not parse is dropped whole.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::field;

/// The header that carries the trace id, the parent span id and the sampled flag.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The header that carries vendors' trace data, passed on unchanged.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The most `tracestate` list members passed on (the specification's limit).
pub(crate) const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The longest `tracestate` passed on (the specification asks for at least 512).
pub(crate) const MAX_TRACESTATE_BYTES: usize = 512;

/// The trace of one request, and its own (server) span id.
#[derive(Debug, Clone)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: u128,
    /// The request's span: the parent of every upstream attempt.
    pub(crate) span_id: u64,
    /// The client's span, when the trace was continued from its `traceparent`.
    pub(crate) parent: Option<u64>,
    pub(crate) sampled: bool,
    /// The `tracestate` that came with a continued trace, bounded.
    pub(crate) state: Option<HeaderValue>,
}

impl TraceContext {
    /// The trace of a request with `headers`: its `traceparent`'s when that is valid and
    /// `accept` (with its `tracestate`), else a new one, sampled with probability `ratio`.
    pub(crate) fn of_request(headers: &HeaderMap, accept: bool, ratio: f64) -> Self {
        let span_id = nonzero_u64();
        let parent = field::one(headers, &TRACEPARENT).ok().flatten().map(HeaderValue::as_bytes);
        if accept && let Some((trace_id, parent, flags)) = parent.and_then(parse_traceparent) {
            let state = tracestate(headers);
            return Self { trace_id, span_id, parent: Some(parent), sampled: flags & 1 == 1, state };
        }
        let sampled = ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio);
        Self { trace_id: nonzero_u128(), span_id, parent: None, sampled, state: None }
    }

    /// The `traceparent` of one upstream attempt: this trace, a new span id (returned too), this
    /// request's sampled flag.
    pub(crate) fn attempt(&self) -> (u64, HeaderValue) {
        let span_id = nonzero_u64();
        // `00-<trace>-<span>-<flags>`, written in place: `format!` costs several times more.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        text[3..35].copy_from_slice(&hex_u128(self.trace_id));
        text[36..52].copy_from_slice(&hex_u64(span_id));
        text[54] = if self.sampled { b'1' } else { b'0' };
        // Hex digits and dashes only.
        let value = HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
        (span_id, value)
    }

    /// The trace id and the request's span id as W3C writes them: lower-case hex, zero-padded.
    pub(crate) fn ids(&self) -> HexIds {
        let mut digits = [0; 48];
        digits[..32].copy_from_slice(&hex_u128(self.trace_id));
        digits[32..].copy_from_slice(&hex_u64(self.span_id));
        HexIds(digits)
    }
}

/// A trace id (32 hex digits) and a span id (16), written once and lent as text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HexIds([u8; 48]);

impl HexIds {
    pub(crate) fn trace_id(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0[..32]).unwrap_or_default()
    }

    pub(crate) fn span_id(&self) -> &str {
        std::str::from_utf8(&self.0[32..]).unwrap_or_default()
    }
}

/// `value` as 32 lower-case hex digits, zero-padded (a trace id).
fn hex_u128(value: u128) -> [u8; 32] {
    let mut digits = [0; 32];
    digits[..16].copy_from_slice(&hex_u64((value >> 64) as u64));
    digits[16..].copy_from_slice(&hex_u64(value as u64));
    digits
}

/// `value` as 16 lower-case hex digits, zero-padded (a span id), all lanes at once rather than a
/// table lookup per digit: each nibble is spread into a byte of its own, high nibble first, then
/// turned into its digit.
fn hex_u64(value: u64) -> [u8; 16] {
    const LANES: u128 = u128::MAX / 0xff; // 0x0101…01: one in each byte
    let mut v = u128::from(value);
    v = (v | (v << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & (LANES * 0x0f);
    // A nibble of 10 or more carries into its byte's bit 4 when 6 is added: a letter, whose
    // digit is 39 past where `0` + the nibble would be.
    let letters = ((v + LANES * 0x06) >> 4) & LANES;
    (v + LANES * b'0' as u128 + letters * 39).to_be_bytes()
}

fn nonzero_u128() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

pub(crate) fn nonzero_u64() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// `version-traceid-parentid-flags`: the trace id, the parent id and the flags, if valid.
fn parse_traceparent(value: &[u8]) -> Option<(u128, u64, u8)> {
    // Version 00 is exactly 55 bytes; a later version may add fields after a `-`.
    let version = lower_hex(value.get(0..2)?)? as u8;
    match (version, value.len()) {
        (0xff, _) => return None,
        (0, 55) => {}
        (0, _) => return None,
        (_, 55) => {}
        (_, n) if n > 55 && value[55] == b'-' => {}
        _ => return None,
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = lower_hex(&value[3..35])?;
    let parent_id = lower_hex(&value[36..52])? as u64;
    let flags = lower_hex(&value[53..55])? as u8;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

/// `digits` (at most 32 lower-case hex digits) as a number.
fn lower_hex(digits: &[u8]) -> Option<u128> {
    let mut n: u128 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(v);
    }
    Some(n)
}

/// The request's `tracestate` (its lines joined), bounded as the module docs say.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut kept = String::new();
    let mut members = 0;
    for line in headers.get_all(&TRACESTATE) {
        // A client's headers are bounded by the edge; a line this long is not one to pass on.
        let line = line.to_str().ok()?;
        for member in line.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
            if !valid_member(member) {
                return None;
            }
            let extra = member.len() + usize::from(!kept.is_empty());
            if members == MAX_TRACESTATE_MEMBERS || kept.len() + extra > MAX_TRACESTATE_BYTES {
                continue;
            }
            if !kept.is_empty() {
                kept.push(',');
            }
            kept.push_str(member);
            members += 1;
        }
    }
    (!kept.is_empty()).then(|| HeaderValue::try_from(kept).ok()).flatten()
}

/// `key=value`: a key of lower-case letters, digits and `_-*/` (with one `@` for a tenant's
/// vendor), at most 256 bytes; a value of printable ASCII but `,` and `=`, not ending in a space,
/// at most 256 bytes.
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else { return false };
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b))
        && key.bytes().filter(|&b| b == b'@').count() <= 1;
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ');
    key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let context = TraceContext::of_request(&headers(&[(TRACEPARENT, VALID)]), true, 0.0);
        assert_eq!(context.ids().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(context.span_id, 0x00f067aa0ba902b7);
        assert!(context.sampled, "the parent's flag, whatever the ratio");
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::of_request(&headers(&[(TRACEPARENT, &unsampled)]), true, 1.0).sampled);
        // A later version may carry more fields; its first four are read.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        let continued = TraceContext::of_request(&headers(&[(TRACEPARENT, future)]), true, 0.0);
        assert_eq!(continued.ids().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn ids_are_written_as_zero_padded_lower_case_hex() {
        let fixed = [(1, 2, false), (u128::MAX, u64::MAX, true), (0x4bf9 << 100, 0xab, true)];
        // Every digit, then random ids.
        let digits = [(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0x0123_4567_89ab_cdef, false)];
        let random = (0..1000).map(|_| (fastrand::u128(..), fastrand::u64(..), fastrand::bool()));
        for (trace_id, span_id, sampled) in fixed.into_iter().chain(digits).chain(random) {
            let context = TraceContext { trace_id, span_id, parent: None, sampled, state: None };
            assert_eq!(context.ids().trace_id(), format!("{trace_id:032x}"));
            assert_eq!(context.ids().span_id(), format!("{span_id:016x}"));
            let (attempt, header) = context.attempt();
            let expected = format!("00-{trace_id:032x}-{attempt:016x}-0{}", u8::from(sampled));
            assert_eq!(header.to_str().unwrap(), expected);
            assert!(parse_traceparent(header.as_bytes()).is_some());
        }
    }

    #[test]
    fn a_malformed_or_untrusted_traceparent_starts_a_new_trace() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            let context = TraceContext::of_request(&headers(&[(TRACEPARENT, value)]), true, 1.0);
            assert_ne!(context.trace_id, TRACE, "{value:?}");
            assert_ne!(context.trace_id, 0);
            assert!(context.sampled, "a new trace sampled at ratio 1");
        }
        let twice = headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)]);
        assert_ne!(TraceContext::of_request(&twice, true, 1.0).trace_id, TRACE, "sent twice");
        let untrusted = TraceContext::of_request(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1")]), false, 0.0);
        assert_ne!(untrusted.trace_id, TRACE);
        assert_eq!(untrusted.state, None, "the state goes with the trace it came with");
        assert!(!untrusted.sampled, "a new trace at ratio 0");
        let none = TraceContext::of_request(&HeaderMap::new(), true, 1.0);
        assert_ne!(none.trace_id, TraceContext::of_request(&HeaderMap::new(), true, 1.0).trace_id);
    }

    #[test]
    fn each_attempt_has_its_own_span_in_the_same_trace() {
        let context = TraceContext::of_request(&headers(&[(TRACEPARENT, VALID)]), true, 0.0);
        let (first_id, first) = context.attempt();
        let (second_id, second) = context.attempt();
        assert_ne!(first_id, second_id);
        assert_eq!(first.to_str().unwrap(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{first_id:016x}-01"));
        assert_eq!(parse_traceparent(second.as_bytes()), Some((context.trace_id, second_id, 1)));
    }

    #[test]
    fn tracestate_is_passed_on_bounded() {
        let state = |lines: &[&str]| {
            let mut pairs = vec![(TRACEPARENT, VALID)];
            pairs.extend(lines.iter().map(|l| (TRACESTATE, *l)));
            TraceContext::of_request(&headers(&pairs), true, 1.0).state.map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(state(&[]), None);
        assert_eq!(
            state(&["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(state(&["a=1", "b@vendor=2"]).as_deref(), Some("a=1,b@vendor=2"), "lines joined");
        assert_eq!(state(&["a=1,,  ,b=2"]).as_deref(), Some("a=1,b=2"), "empty members skipped");
        for bad in ["A=1", "a", "a=", "a=b=c", "@a=1", "a@b@c=1"] {
            assert_eq!(state(&[&format!("x=1,{bad}")]), None, "{bad:?}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let kept = state(&[&many.join(",")]).unwrap();
        assert_eq!(kept.split(',').count(), MAX_TRACESTATE_MEMBERS);
        let long: Vec<String> = (0..10).map(|i| format!("k{i}={}", "v".repeat(100))).collect();
        let kept = state(&[&long.join(",")]).unwrap();
        assert!(
            kept.len() <= MAX_TRACESTATE_BYTES && kept.starts_with("k0=") && kept.split(',').count() == 4,
            "{kept}"
        );
    }

    proptest::proptest! {
        /// Any header bytes: a context or none, never a panic.
        #[test]
        fn any_traceparent_is_parsed_or_ignored(value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..90)) {
            let _ = parse_traceparent(&value);
        }

        /// A valid `traceparent` gives back its ids and flags.
        #[test]
        fn a_valid_traceparent_round_trips(trace in 1u128.., parent in 1u64.., flags in proptest::prelude::any::<u8>()) {
            let text = format!("00-{trace:032x}-{parent:016x}-{flags:02x}");
            proptest::prop_assert_eq!(parse_traceparent(text.as_bytes()), Some((trace, parent, flags)));
        }
    }
}
