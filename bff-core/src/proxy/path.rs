//! What a proxied request's path may hold, once the edge has normalised it (dot segments
//! resolved, repeated slashes merged, unreserved characters decoded: `edge/normalize.rs`). What is
//! left that an upstream (or a proxy before it) could read as another resource than the one routed
//! is refused, not repaired: an encoded `/` or `\`, which would split a segment upstream (or, once
//! decoded there, climb out of the rewrite); a `\`, which some servers read as `/`; control
//! characters and an encoded NUL; and a `.` or `..` with path parameters (`..;x`, encoded or
//! not), which servers that drop path parameters (Tomcat, and so Spring) resolve as `..`.

/// Why `path` (normalised, without the query) is refused, if it is.
pub(crate) fn unsafe_path(path: &str) -> Option<&'static str> {
    if path.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Some("the path holds a control character or a `\\`");
    }
    if !path.contains(['%', ';']) {
        return None;
    }
    for segment in path.split('/').filter(|s| s.contains(['%', ';'])) {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Some("the path has an encoded `/`, `\\` or NUL in a segment");
        }
        if crate::upstream::is_dot_name(&decoded) {
            return Some("the path has a `.` or `..` segment with parameters (`..;`), read as `..` by some servers");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_separators_are_refused_and_plain_paths_pass() {
        for bad in [
            "/api/catalog/products/a%2f..%2f_faults",
            "/api/catalog/products/..%2f_faults",
            "/api/catalog/products/a%2F_faults",
            "/api/catalog/products/a%5c_faults",
            "/api/catalog/products/a\\..\\_faults",
            "/api/catalog/products/a%00",
            "/api/catalog/products/a\u{1}",
            "/api/catalog/products/..;/_faults",
            "/api/catalog/products/..;jsessionid=x/..;/_stats",
            "/api/catalog/products/.;/x",
            "/api/catalog/products/..%3b/_faults",
            "/api/catalog/products/%2e%2e;x/_faults",
        ] {
            assert!(unsafe_path(bad).is_some(), "{bad} passed");
        }
        for good in [
            "/api/catalog/products/SKU-1",
            "/api/catalog/products/a%20b",
            "/api/x/",
            "/",
            "/a/.well-known/x..",
            "/a/b;v=1/c",
            "/a/...;x",
            "/a/x..;y",
        ] {
            assert_eq!(unsafe_path(good), None, "{good}");
        }
    }
}
