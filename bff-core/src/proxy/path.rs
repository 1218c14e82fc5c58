//! What a proxied request's path may hold. A path an upstream (or a proxy before it) could read as
//! another resource than the one routed is refused, not repaired: `.` and `..` segments, written
//! or percent-encoded; an encoded `/` or `\`, which would split a segment upstream; a `\`, which
//! some servers read as `/`; empty segments (`//`), which some servers merge; control characters
//! and encoded NUL.

/// Why `path` (raw, without the query) is refused, if it is.
pub(crate) fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Some("the path holds a control character or a `\\`");
    }
    let segments = path.strip_prefix('/')?.split('/');
    let count = path.split('/').count() - 1;
    for (i, segment) in segments.enumerate() {
        // A `/` at the very end is an empty last segment, and a common spelling.
        if segment.is_empty() && i + 1 < count {
            return Some("the path has an empty segment (`//`)");
        }
        if !segment.contains('%') {
            if segment == "." || segment == ".." {
                return Some("the path has a `.` or `..` segment");
            }
            continue;
        }
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Some("the path has an encoded `/`, `\\` or NUL in a segment");
        }
        if decoded == b"." || decoded == b".." {
            return Some("the path has a `.` or `..` segment");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_spellings_are_refused_and_plain_paths_pass() {
        for bad in [
            "/api/catalog/products/../../_faults",
            "/api/catalog/products/%2e%2e/_faults",
            "/api/catalog/products/%2E%2e/_faults",
            "/api/catalog/products/.%2e/_faults",
            "/api/catalog/products/.",
            "/api/catalog/products/a%2f..%2f_faults",
            "/api/catalog/products/a%2F_faults",
            "/api/catalog/products/a%5c_faults",
            "/api/catalog/products/a\\..\\_faults",
            "/api/catalog//_faults",
            "/api/catalog/products/a%00",
            "/api/catalog/products/a\u{1}",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad} passed");
        }
        for good in ["/api/catalog/products/SKU-1", "/api/catalog/products/a%20b", "/api/x/", "/", "/a/.well-known/x.."]
        {
            assert_eq!(unsafe_path(good), None, "{good}");
        }
    }
}
