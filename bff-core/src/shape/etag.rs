//! Weak ETags on successful JSON `GET`s and `304 Not Modified` on a matching `If-None-Match`.
//!
//! The tag is a hash of the uncompressed representation, so every replica computes the same one;
//! it is weak because compression may change the bytes on the wire.

use axum::http::{HeaderMap, HeaderValue, header};

/// The weak ETag of a body.
pub fn etag(body: &[u8]) -> HeaderValue {
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    HeaderValue::try_from(format!("W/\"{hash:016x}\"")).unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// The opaque part of an entity tag: weak comparison ignores the `W/` prefix.
fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Whether `If-None-Match` matches `tag` by weak comparison (RFC 9110 §13.1.2).
pub fn matches(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    let ours = opaque(tag.to_str().unwrap_or_default());
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || opaque(candidate) == ours
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_body_same_tag_and_weak_comparison() {
        let tag = etag(b"{\"a\":1}");
        assert_eq!(tag, etag(b"{\"a\":1}"));
        assert_ne!(tag, etag(b"{\"a\":2}"));
        let strong = tag.to_str().unwrap().trim_start_matches("W/").to_owned();
        for (value, expected) in [
            (tag.to_str().unwrap().to_owned(), true),
            (strong, true),
            (format!("\"other\", {}", tag.to_str().unwrap()), true),
            ("*".to_owned(), true),
            ("\"other\"".to_owned(), false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::try_from(value.clone()).unwrap());
            assert_eq!(matches(&headers, &tag), expected, "{value}");
        }
        assert!(!matches(&HeaderMap::new(), &tag));
    }
}
