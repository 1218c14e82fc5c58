//! Header fields a request may carry once (RFC 9110 §5.3: a singleton field sent twice is
//! invalid): `Host`, `Authorization`, an API key, `Content-Type`, `Idempotency-Key`,
//! `traceparent`. Read as all of its values, so that a second one is refused, not left for a
//! proxy or upstream that reads the last to take.
//!
//! And the members of a field that is a list ([`members`]), such as `Transfer-Encoding`, which
//! may only be `chunked`, once ([`transfer_codings`]).
//!
//! A leaf: the edge, the policies, the extractors, the trace context and the upstream transport
//! all read through it.

use std::fmt;

use http::header::{AsHeaderName, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

/// The field was sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Repeated;

/// The one value of `name` in `headers`: `None` when absent, [`Repeated`] when sent twice or more.
pub(crate) fn one<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Result<Option<&HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() { Err(Repeated) } else { Ok(first) }
}

/// The members of list field `name` over all its lines (RFC 9110 §5.6.1): split at commas, spaces
/// and tabs around them trimmed, empty ones (which mean nothing) skipped. Read as bytes.
pub(crate) fn members<K: AsHeaderName>(headers: &HeaderMap, name: K) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|member| !member.is_empty())
}

/// What is wrong with a message's `Transfer-Encoding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// A coding other than `chunked` (the first such, cut short to be shown).
    Unsupported(String),
    /// `chunked` more than once, which no sender may write (RFC 9112 §7.1).
    Repeated,
    /// A value that is not text.
    NotText,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(coding) => write!(f, "`Transfer-Encoding: {coding}`: only `chunked` is read"),
            Self::Repeated => f.write_str("`Transfer-Encoding` names `chunked` more than once"),
            Self::NotText => f.write_str("`Transfer-Encoding` is not text"),
        }
    }
}

/// A body framed by `chunked` alone, once, or not by `Transfer-Encoding` at all.
///
/// hyper decodes `chunked` when it is the last coding and hands on whatever codings come before
/// it undecoded: with `Transfer-Encoding: gzip, chunked` the body read is compressed bytes, and
/// the header that says so is hop-by-hop, so not forwarded. Checked on requests at the edge and
/// on every upstream answer.
pub(crate) fn transfer_codings(headers: &HeaderMap) -> Result<(), Framing> {
    let mut values = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = values.next() else { return Ok(()) };
    if first.as_bytes().eq_ignore_ascii_case(b"chunked") && values.next().is_none() {
        return Ok(());
    }
    let mut chunked = 0;
    for coding in members(headers, TRANSFER_ENCODING) {
        let coding = std::str::from_utf8(coding).map_err(|_| Framing::NotText)?;
        if !coding.eq_ignore_ascii_case("chunked") {
            return Err(Framing::Unsupported(coding.chars().take(32).collect()));
        }
        chunked += 1;
    }
    if chunked > 1 { Err(Framing::Repeated) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use http::header::AUTHORIZATION;

    use super::*;

    #[test]
    fn a_field_is_absent_once_or_repeated() {
        let mut headers = HeaderMap::new();
        assert_eq!(one(&headers, AUTHORIZATION), Ok(None));
        headers.append(AUTHORIZATION, HeaderValue::from_static("a"));
        assert_eq!(one(&headers, AUTHORIZATION), Ok(Some(&HeaderValue::from_static("a"))));
        headers.append(AUTHORIZATION, HeaderValue::from_static("a"));
        assert_eq!(one(&headers, "authorization"), Err(Repeated));
    }

    fn framed(values: &[&[u8]]) -> Result<(), Framing> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(TRANSFER_ENCODING, HeaderValue::from_bytes(value).unwrap());
        }
        transfer_codings(&headers)
    }

    /// `chunked` once, in any case and spacing, or no header: read. Any other coding, `chunked`
    /// twice (in one value or two), or a value that is not text: refused.
    #[test]
    fn only_chunked_once_frames_a_body() {
        let ok: [&[&[u8]]; 5] = [&[], &[b"chunked"], &[b"Chunked"], &[b" chunked ,"], &[b",", b"chunked"]];
        for ok in ok {
            assert_eq!(framed(ok), Ok(()), "{ok:?}");
        }
        let codings: [&[&[u8]]; 4] = [&[b"gzip, chunked"], &[b"gzip", b"chunked"], &[b"identity"], &[b"chunked;x=1"]];
        let named = ["gzip", "gzip", "identity", "chunked;x=1"];
        for (coding, named) in codings.into_iter().zip(named) {
            assert_eq!(framed(coding), Err(Framing::Unsupported(named.to_owned())), "{coding:?}");
        }
        let twice: [&[&[u8]]; 2] = [&[b"chunked, chunked"], &[b"chunked", b"CHUNKED"]];
        for twice in twice {
            assert_eq!(framed(twice), Err(Framing::Repeated), "{twice:?}");
        }
        assert_eq!(framed(&[b"chunked\xff"]), Err(Framing::NotText));
        let long = format!("br{}, chunked", "x".repeat(500));
        assert_eq!(framed(&[long.as_bytes()]), Err(Framing::Unsupported(format!("br{}", "x".repeat(30)))));
    }
}
