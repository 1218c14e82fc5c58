//! Header fields a request may carry once (RFC 9110 §5.3: a singleton field sent twice is
//! invalid): `Host`, `Authorization`, an API key, `Content-Type`, `Idempotency-Key`,
//! `traceparent`. Read as all of its values, so that a second one is refused, not left for a
//! proxy or upstream that reads the last to take.
//!
//! A leaf: the edge, the policies, the extractors and the trace context all read through it.

use http::header::AsHeaderName;
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
}
