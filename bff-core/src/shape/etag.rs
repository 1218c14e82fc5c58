//! Weak ETags on successful JSON `GET`s and `304 Not Modified` on a matching `If-None-Match`.
//!
//! The tag is a hash of the uncompressed representation, so every replica computes the same one;
//! it is weak because compression may change the bytes on the wire.

use axum::http::HeaderValue;

/// The weak ETag of a body: `W/"` and the 64-bit xxh3 of the body in hex, then `"`.
pub fn etag(body: &[u8]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    let mut tag = *b"W/\"0000000000000000\"";
    for (i, digit) in tag[3..19].iter_mut().enumerate() {
        *digit = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&tag).unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// The opaque part of an entity tag: weak comparison ignores the `W/` prefix.
fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Whether the `If-None-Match` values match `tag` by weak comparison (RFC 9110 §13.1.2).
pub fn matches<'a>(if_none_match: impl IntoIterator<Item = &'a HeaderValue>, tag: &HeaderValue) -> bool {
    let ours = opaque(tag.to_str().unwrap_or_default());
    if_none_match.into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || opaque(candidate) == ours
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, header};

    use super::*;

    #[test]
    fn the_tag_is_the_hash_in_hex() {
        let hash = xxhash_rust::xxh3::xxh3_64(b"{}");
        assert_eq!(etag(b"{}").to_str().unwrap(), format!("W/\"{hash:016x}\""));
        assert_eq!(etag(b"").to_str().unwrap(), format!("W/\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(b"")));
    }

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
            assert_eq!(matches(headers.get_all(header::IF_NONE_MATCH), &tag), expected, "{value}");
        }
        assert!(!matches(&[], &tag));
    }
}
