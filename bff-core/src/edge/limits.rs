//! Request limits checked before anything else reads the request: a URI longer than
//! `server.max_uri_bytes` is a 414 problem, and a body framed in a way the gateway cannot read is
//! refused. (The head and header count are hyper's, in `serve`; the body, per route, is
//! `extract::Json`'s.)

use axum::extract::Request;
use axum::http::header::TRANSFER_ENCODING;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
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
        transfer_codings(request.headers()).map_err(IntoResponse::into_response)
    }
}

/// A body framed only by `chunked`, once, or not by `Transfer-Encoding` at all.
///
/// hyper decodes `chunked` when it is the last coding and hands on whatever codings come before
/// it undecoded: with `Transfer-Encoding: gzip, chunked`, a handler would read compressed bytes
/// as the body, and a proxied route would send them upstream with nothing saying they are
/// compressed (the header is hop-by-hop, so it is not forwarded). A coding the gateway does not
/// decode is a 501 (RFC 9112 §6.1, as nginx answers); `chunked` twice, which no sender may
/// write, a 400. HTTP/2 has no such header: its framing layer refuses one.
fn transfer_codings(headers: &HeaderMap) -> Result<(), BffError> {
    let mut values = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = values.next() else { return Ok(()) };
    if first.as_bytes().eq_ignore_ascii_case(b"chunked") && values.next().is_none() {
        return Ok(());
    }
    let mut chunked = 0;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(BffError::bad_request("INVALID_TRANSFER_ENCODING", "`Transfer-Encoding` is not text"));
        };
        // Empty list members are allowed and mean nothing (RFC 9110 §5.6.1).
        for coding in text.split(',').map(|c| c.trim_matches([' ', '\t'])).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                let shown: String = coding.chars().take(32).collect();
                let detail = format!(
                    "`Transfer-Encoding: {shown}` is not supported: send the body with `chunked` alone \
                     (a compressed body says so with `Content-Encoding`)"
                );
                let (status, code) = (StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED_TRANSFER_CODING");
                return Err(BffError::Rejected { status, code, detail });
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(BffError::bad_request(
            "INVALID_TRANSFER_ENCODING",
            "`Transfer-Encoding` names `chunked` more than once: send it once",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn framed(values: &[&[u8]]) -> Result<(), (StatusCode, &'static str)> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(TRANSFER_ENCODING, HeaderValue::from_bytes(value).unwrap());
        }
        transfer_codings(&headers).map_err(|e| (e.status(), e.code()))
    }

    /// `chunked` once, in any case and spacing, or no header: read. Any other coding: 501. `chunked`
    /// twice, in one value or two, or a value that is not text: 400.
    #[test]
    fn only_chunked_once_frames_a_body() {
        let ok: [&[&[u8]]; 5] = [&[], &[b"chunked"], &[b"Chunked"], &[b" chunked ,"], &[b",", b"chunked"]];
        for ok in ok {
            assert_eq!(framed(ok), Ok(()), "{ok:?}");
        }
        let unsupported = Err((StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED_TRANSFER_CODING"));
        let codings: [&[&[u8]]; 4] = [&[b"gzip, chunked"], &[b"gzip", b"chunked"], &[b"identity"], &[b"chunked;x=1"]];
        for coding in codings {
            assert_eq!(framed(coding), unsupported, "{coding:?}");
        }
        let invalid = Err((StatusCode::BAD_REQUEST, "INVALID_TRANSFER_ENCODING"));
        let twice: [&[&[u8]]; 3] = [&[b"chunked, chunked"], &[b"chunked", b"CHUNKED"], &[b"chunked\xff"]];
        for twice in twice {
            assert_eq!(framed(twice), invalid, "{twice:?}");
        }
    }

    /// What the coding is called is shown, cut short, so the client sees what to fix.
    #[test]
    fn the_refusal_names_the_coding() {
        let mut headers = HeaderMap::new();
        let long = format!("br{}, chunked", "x".repeat(500));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_str(&long).unwrap());
        let detail = transfer_codings(&headers).unwrap_err().to_string();
        assert!(detail.contains("`Transfer-Encoding: brxxx") && detail.len() < 200, "{detail}");
    }
}
