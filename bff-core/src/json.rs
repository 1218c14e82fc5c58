//! JSON read from a buffered body: the bytes checked as UTF-8 once, whole, then parsed as text.
//!
//! Read as bytes, serde_json checks each string it meets on its own, keys included, at a cost
//! per string; `std::str::from_utf8` checks the whole buffer in one pass, fast over ASCII, and
//! serde_json then reads the text without checking it again (`bench/README.md`).

use serde::de::DeserializeOwned;

/// Why bytes are not the JSON asked for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JsonError {
    /// Not UTF-8, so not JSON text (RFC 8259 §8.1).
    #[error(transparent)]
    Utf8(#[from] std::str::Utf8Error),
    /// Not JSON, or not of the shape asked for.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `bytes` as a `T`.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    Ok(serde_json::from_str(std::str::from_utf8(bytes)?)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn text_reads_as_from_slice_would_and_bytes_that_are_not_utf8_say_so() {
        let text = "{\"name\":\"Gr\u{e2}ce \\u00e9\u{1f600}\",\"n\":[1,2.5,null]}";
        let read: Value = from_bytes(text.as_bytes()).unwrap();
        assert_eq!(read, json!({"name": "Gr\u{e2}ce \u{e9}\u{1f600}", "n": [1, 2.5, null]}));
        assert_eq!(read, serde_json::from_slice::<Value>(text.as_bytes()).unwrap());
        for bytes in [&b"{\"name\":\"Gr\xffce\"}"[..], b"{\"name\":\"\xed\xa0\x80\"}", b"[1,2]\xc3"] {
            let error = from_bytes::<Value>(bytes).unwrap_err();
            assert!(matches!(error, JsonError::Utf8(_)), "{bytes:?}");
            assert!(error.to_string().contains("utf-8"), "{error}");
        }
        let error = from_bytes::<Value>(b"{\"a\":}").unwrap_err();
        assert!(matches!(error, JsonError::Json(_)), "{error}");
        assert_eq!(error.to_string(), "expected value at line 1 column 6");
    }
}
