//! The path as routing sees it, normalised once before any route is matched, so that a route
//! cannot be missed, or a limit keyed by route dodged, by spelling its path another way:
//!
//! - percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`) are decoded, as
//!   RFC 3986 §6.2.2.2 makes `/%61pi` and `/api` the same path;
//! - runs of `/` are merged (`//api///x` is `/api/x`);
//! - `.` and `..` segments are resolved (RFC 3986 §5.2.4), the encoded ones (`%2e%2e`) too;
//!   a `..` that would climb above the root is a `400 INVALID_PATH`; the path as written (its
//!   `..` kept) goes with the request ([`PathWithDots`]), so that a passthrough route can refuse
//!   a path that climbed out of it (`proxy/mod.rs`).
//!
//! Nothing else is decoded: an encoded `/` or `\` stays one, inside its segment (a passthrough
//! route refuses it, see `proxy/path.rs`). The query is left as it came. The normalised path is
//! the one handlers see and passthrough routes forward.
//!
//! A `%` that is not followed by two hex digits is a `400 INVALID_PATH` (RFC 3986 §2.1 has no
//! other `%`). Decoding such a path once can make a new escape of what follows: `%2%65` becomes
//! `%2e`, which routing would take for the three characters it is and an upstream decoding once
//! more for a `.`, so that `%2%65%2%65` would climb out of a route there. With every `%` an
//! escape, decoding makes no new one, and a normalised path normalises to itself.

use axum::extract::Request;
use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use axum::response::{IntoResponse, Response};

use crate::error::BffError;
use crate::middleware::Filter;
use crate::request::PathWithDots;

/// Normalises every request's path; refuses one that climbs above the root.
#[derive(Debug, Clone, Copy)]
pub(super) struct Normalize;

impl Filter for Normalize {
    type State = ();

    fn on_request(&self, request: &mut Request) -> Result<(), Response> {
        let path = match normalize(request.uri().path()) {
            Ok(None) => return Ok(()),
            Ok(Some(path)) => path,
            Err(why) => return Err(BffError::bad_request("INVALID_PATH", why).into_response()),
        };
        if let Some(with_dots) = with_dots(request.uri().path()) {
            request.extensions_mut().insert(PathWithDots(with_dots.into()));
        }
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        // Normalising only removes escapes and segments, so what was a path is still one.
        parts.path_and_query = PathAndQuery::try_from(rebuilt).ok();
        *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        Ok(())
    }
}

/// Why a path is refused.
const ABOVE_ROOT: &str = "the path climbs above the root with `..`";
const BROKEN_ESCAPE: &str = "the path has a `%` that is not followed by two hex digits (write `%25` for a `%`)";

/// `path` normalised, if that changes it; an error when a `..` climbs above the root or a `%` is
/// not an escape.
pub(super) fn normalize(path: &str) -> Result<Option<String>, &'static str> {
    let decoded = decode_unreserved(path)?;
    let path = decoded.as_deref().unwrap_or(path);
    if !path.starts_with('/') || !(path.contains("//") || path.contains("/.")) {
        return Ok(decoded);
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut climbed = false;
    // After the leading `/`: every segment, the empty ones being merged slashes.
    let parts: Vec<&str> = path[1..].split('/').collect();
    let last = parts.len() - 1;
    // Whether the result ends with a `/`: as the path did, or after a `.` or `..` last segment.
    let mut trailing = false;
    for (i, segment) in parts.into_iter().enumerate() {
        match segment {
            "" => {
                trailing = i == last;
                continue;
            }
            "." => trailing = i == last,
            ".." => {
                if segments.pop().is_none() {
                    climbed = true;
                }
                trailing = i == last;
            }
            _ => {
                segments.push(segment);
                trailing = false;
            }
        }
    }
    if climbed {
        return Err(ABOVE_ROOT);
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing || segments.is_empty() {
        normalized.push('/');
    }
    Ok((normalized != path || decoded.is_some()).then_some(normalized))
}

/// `path` with its slashes merged, unreserved characters decoded and `.` segments dropped, but its
/// `..` segments kept: what it would have matched had they not been resolved. `None` if it has
/// no `..`.
fn with_dots(path: &str) -> Option<String> {
    // Read after `normalize` took the path: its escapes are whole.
    let decoded = decode_unreserved(path).ok().flatten();
    let path = decoded.as_deref().unwrap_or(path);
    if !path.split('/').any(|segment| segment == "..") {
        return None;
    }
    let mut kept = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        kept.push('/');
        kept.push_str(segment);
    }
    Some(kept)
}

/// `path` with its escaped unreserved characters decoded, if it has any; an error when a `%`
/// is not followed by two hex digits. One pass over a path with a `%`, none over one without.
fn decode_unreserved(path: &str) -> Result<Option<String>, &'static str> {
    if !path.contains('%') {
        return Ok(None);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(high), Some(low)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) else {
                return Err(BROKEN_ESCAPE);
            };
            let byte = high * 16 + low;
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(byte);
                changed = true;
            } else {
                out.extend_from_slice(&bytes[i..i + 3]);
            }
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    // A URI's path is ASCII, and so is every byte decoded here.
    Ok(changed.then(|| String::from_utf8(out).ok()).flatten())
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_are_decoded() {
        let decoded = |path| decode_unreserved(path).unwrap();
        assert_eq!(decoded("/api/catalog"), None);
        assert_eq!(decoded("/%61pi/%63atalog/SKU%2D1%7E").as_deref(), Some("/api/catalog/SKU-1~"));
        assert_eq!(decoded("/a/%2e%2E").as_deref(), Some("/a/.."), "dots too: they are then resolved");
        assert_eq!(decoded("/a%2Fb/%5c/%20"), None, "a slash, a backslash, a space stay encoded");
        assert_eq!(decoded("/a%2Fb%41").as_deref(), Some("/a%2FbA"));
        for broken in ["/%zz", "/%4", "/a%"] {
            assert_eq!(decode_unreserved(broken), Err(BROKEN_ESCAPE), "{broken}: not an escape");
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_resolved() {
        let cases = [
            ("/api/catalog/products/SKU-1", None),
            ("/api/catalog/products/a/../SKU-1", Some("/api/catalog/products/SKU-1")),
            ("/api/catalog/products/./SKU-1", Some("/api/catalog/products/SKU-1")),
            ("/api//catalog///products/SKU-1", Some("/api/catalog/products/SKU-1")),
            ("//api", Some("/api")),
            ("/api/catalog/products/%2e%2e/%2E%2e/x", Some("/api/x")),
            ("/api/catalog/products/../../../_faults", Some("/_faults")),
            ("/api/x/..", Some("/api/")),
            ("/api/x/.", Some("/api/x/")),
            ("/api/x//", Some("/api/x/")),
            ("/api/x/", None),
            ("/", None),
            ("/..x/.y/x../a.b", None),
            ("/a/%2e%2e%2f_faults", Some("/a/..%2f_faults")),
            ("/.well-known/x", None),
            ("/%61pi", Some("/api")),
            ("/a/..", Some("/")),
        ];
        for (path, expected) in cases {
            assert_eq!(normalize(path), Ok(expected.map(str::to_owned)), "{path}");
        }
    }

    #[test]
    fn a_path_with_dot_dot_segments_keeps_them_for_the_router() {
        assert_eq!(with_dots("/api/catalog/products/SKU-1"), None);
        assert_eq!(with_dots("/api/./x//y/"), None, "no `..`");
        assert_eq!(with_dots("/api/catalog//products/./%2e%2E/../x").as_deref(), Some("/api/catalog/products/../../x"));
        let mut request = Request::builder().uri("/a/b/../c").body(axum::body::Body::empty()).unwrap();
        assert!(Normalize.on_request(&mut request).is_ok());
        assert_eq!(request.uri(), "/a/c");
        assert_eq!(request.extensions().get::<PathWithDots>().map(|p| &*p.0), Some("/a/b/../c"));
    }

    #[test]
    fn a_percent_that_is_not_an_escape_is_refused() {
        for path in ["/%", "/a%", "/%4", "/%zz", "/%4g/x", "/%2%65%2%65/_faults", "/a/%%32%65", "/%\u{e9}"] {
            assert_eq!(normalize(path), Err(BROKEN_ESCAPE), "{path}");
        }
        for path in ["/%25", "/a/%2e%2E", "/a%2Fb", "/%4a%4A", "/100%25"] {
            assert!(normalize(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in ["/..", "/../_faults", "/a/../../_faults", "/%2e%2e/_faults", "/a/./../..", "//../x"] {
            assert_eq!(normalize(path), Err(ABOVE_ROOT), "{path}");
        }
    }

    /// Paths made of the pieces an attacker tries: dots plain and encoded in either case,
    /// slashes and backslashes plain and encoded, double encoding, broken escapes (`%2` before
    /// `%65`, which decodes to `%2e`), a NUL; as segments of one to four pieces, so that a
    /// segment is often all dots.
    fn hostile_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        let piece = proptest::sample::select(vec![
            ".", "..", "%2e", "%2E", "%2", "%65", "%45", "e", "%4", "%61", "a", "%2f", "%5c", "\\", "%", "%25",
            "%252e", "%00", "%zz", "_faults", "~", ";", "?", "/",
        ]);
        let segment = proptest::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat());
        proptest::collection::vec(segment, 1..6).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    proptest::proptest! {
        #![proptest_config(crate::slow_proptest(4096))]

        /// Whatever the path, normalising it is a path or a refusal, never a panic; a path
        /// already normal is left as it is; and what comes out has nothing left to normalise:
        /// no empty, `.` or `..` segment, no escaped unreserved character.
        #[test]
        fn a_normalised_path_is_normal(path in hostile_path()) {
            use proptest::prop_assert;
            let Ok(normalised) = normalize(&path) else { return Ok(()) };
            let normal = normalised.as_deref().unwrap_or(&path);
            prop_assert!(normal.starts_with('/'), "{normal}");
            let inner = normal.strip_suffix('/').unwrap_or(normal);
            prop_assert!(inner.is_empty() || inner[1..].split('/').all(|s| !matches!(s, "" | "." | "..")), "{normal}");
            proptest::prop_assert_eq!(decode_unreserved(normal), Ok(None), "{}", normal);
            proptest::prop_assert_eq!(normalize(normal), Ok(None), "{}", normal);
        }

        /// A normalised path that the proxy's check lets through means to an upstream, decoding
        /// it once, the same segments: none becomes `.` or `..` (nor `..;x`, which servers that
        /// drop path parameters read as `..`), none holds a `/`, `\` or NUL.
        /// So a passthrough route's upstream is never sent a path that climbs out of its rewrite.
        #[test]
        fn a_path_the_proxy_passes_cannot_climb_once_decoded(path in hostile_path()) {
            use proptest::prop_assert;
            let Ok(normalised) = normalize(&path) else { return Ok(()) };
            let normal = normalised.as_deref().unwrap_or(&path);
            if crate::proxy::unsafe_path(normal).is_some() {
                return Ok(());
            }
            for segment in normal.split('/').skip(1) {
                let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
                // Nor with path parameters, which some servers (Tomcat) drop: `..;x` is `..` there.
                let name = decoded.split(|&b| b == b';').next().unwrap_or_default();
                prop_assert!(!matches!(name, b"." | b".."), "{normal}: {segment}");
                prop_assert!(!decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)), "{normal}: {segment}");
            }
        }
    }

    #[test]
    fn the_query_is_left_as_it_came() {
        let mut request = Request::builder().uri("/%61pi/./x?q=%61/../b").body(axum::body::Body::empty()).unwrap();
        assert!(Normalize.on_request(&mut request).is_ok());
        assert_eq!(request.uri(), "/api/x?q=%61/../b");
        let mut request = Request::builder().uri("/../x").body(axum::body::Body::empty()).unwrap();
        let refused = Normalize.on_request(&mut request).expect_err("refused");
        assert_eq!(refused.status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
