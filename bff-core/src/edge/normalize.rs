//! The path as routing sees it: percent-encoded unreserved characters (letters, digits, `-`, `.`,
//! `_`, `~`) decoded, since RFC 3986 §6.2.2.2 makes `/%61pi` and `/api` the same path: a route
//! cannot be missed, or a limit keyed by route dodged, by encoding its letters. Nothing else is
//! decoded (an encoded `/` stays one, inside its segment).

use axum::extract::Request;
use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use axum::response::Response;

use super::around::Around;

/// Decodes the unreserved characters of every request's path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unreserved;

impl Around for Unreserved {
    type State = ();

    fn before(&self, request: &mut Request) {
        let Some(path) = decode_unreserved(request.uri().path()) else { return };
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        // Decoding only removes escapes, so what was a path is still one.
        parts.path_and_query = PathAndQuery::try_from(rebuilt).ok();
        *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    }

    fn after((): (), _response: &mut Response) {}
}

/// `path` with its escaped unreserved characters decoded, if it has any.
pub(super) fn decode_unreserved(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
        {
            let byte = high * 16 + low;
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(byte);
                changed = true;
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    // A URI's path is ASCII, and so is every byte decoded here.
    changed.then(|| String::from_utf8(out).ok()).flatten()
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_are_decoded() {
        assert_eq!(decode_unreserved("/api/catalog"), None);
        assert_eq!(decode_unreserved("/%61pi/%63atalog/SKU%2D1%7E").as_deref(), Some("/api/catalog/SKU-1~"));
        assert_eq!(decode_unreserved("/a/%2e%2E").as_deref(), Some("/a/.."), "dots too: the routes then see them");
        assert_eq!(decode_unreserved("/a%2Fb/%5c/%20/%zz/%4"), None, "a slash, a backslash, a space stay encoded");
        assert_eq!(decode_unreserved("/a%2Fb%41").as_deref(), Some("/a%2FbA"));
    }

    #[test]
    fn the_query_is_left_as_it_came() {
        let mut request = Request::builder().uri("/%61pi?q=%61").body(axum::body::Body::empty()).unwrap();
        Unreserved.before(&mut request);
        assert_eq!(request.uri(), "/api?q=%61");
    }
}
