//! axum's `Path`, `Query` and `Json` extractors, rejecting bad input as problem+json.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::body::{CollectError, collect};
use tokio::time::Instant;

use crate::error::BffError;
use crate::field;
pub use crate::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
pub use crate::request::MAX_JSON_BODY;
use crate::request::{RequestMeta, route_of};

/// The longest error detail quoted from a JSON parser (its messages can quote client input).
const MAX_DETAIL: usize = 200;

/// How long reading a body may take on a router not built by the gateway (no request deadline).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON request body decoded as `T`, read under its route's body limit and the request's
/// deadline.
///
/// Refuses a body that is not declared JSON (one `Content-Type: application/json` or
/// `application/*+json`) with 415 `UNSUPPORTED_MEDIA_TYPE`, one over the limit with 413
/// `BODY_TOO_LARGE` (before reading it, when its `Content-Length` says so), one sent compressed
/// (`Content-Encoding` other than `identity`) with 415 `UNSUPPORTED_CONTENT_ENCODING` and
/// `Accept-Encoding: identity`, rather than read as if it were not, one still arriving at
/// the deadline with 408 `BODY_TIMEOUT` (a client trickling a body cannot hold a handler), and one
/// that is not a `T` with 400 `INVALID_BODY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = BffError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let Ok(content_type) = field::one(headers, header::CONTENT_TYPE) else {
            // One field (RFC 9110 §8.3): a proxy in front may read the other.
            let detail = "the request has more than one Content-Type; it must have one";
            return Err(BffError::rejected(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", detail));
        };
        if !content_type.and_then(|v| v.to_str().ok()).is_some_and(is_json) {
            let detail = "the body must be JSON (Content-Type: application/json)";
            return Err(BffError::rejected(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", detail));
        }
        if let Some(coding) = content_coding(headers) {
            let detail = format!(
                "the body is sent in the `{}` content coding, which this endpoint does not read: send it uncompressed",
                crate::problem::bounded(coding, 32)
            );
            return Err(BffError::UnsupportedContentEncoding(detail));
        }
        let route = route_of(request.extensions());
        let (deadline, limit) = match request.extensions().get::<Arc<RequestMeta>>() {
            Some(meta) => (meta.deadline(route), meta.max_body_bytes(route)),
            None => (Instant::now() + BODY_READ_TIMEOUT, MAX_JSON_BODY),
        };
        let too_large = || BffError::body_too_large(limit as u64);
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let read = tokio::time::timeout_at(deadline, collect(request.into_body(), limit)).await;
        let bytes = read
            .map_err(|_| {
                let detail = "the body did not arrive within the request's deadline";
                BffError::rejected(StatusCode::REQUEST_TIMEOUT, "BODY_TIMEOUT", detail)
            })?
            .map_err(|e| match e {
                CollectError::TooLarge(_) => too_large(),
                CollectError::Read(_) => BffError::bad_request("INVALID_BODY", "the body could not be read"),
            })?;
        crate::json::from_bytes(&bytes).map(Json).map_err(|e| {
            let mut detail = format!("the body is not valid here: {e}");
            if detail.len() > MAX_DETAIL {
                let cut = (0..=MAX_DETAIL).rev().find(|i| detail.is_char_boundary(*i)).unwrap_or(0);
                detail.truncate(cut);
                detail.push('…');
            }
            BffError::bad_request("INVALID_BODY", detail)
        })
    }
}

/// The first content coding other than `identity` that `Content-Encoding` names, as sent. Read as
/// bytes: a value that is not text names a coding all the same (and one no endpoint reads).
fn content_coding(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
        .map(|coding| std::str::from_utf8(coding).unwrap_or("(not text)"))
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Like [`axum::extract::Query`]; a bad query string is a 400 `INVALID_QUERY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(BffError::bad_request("INVALID_QUERY", rejection.body_text())),
        }
    }
}

/// Like [`axum::extract::Path`]; a path segment of the wrong type is a 400 `INVALID_PATH`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(BffError::bad_request("INVALID_PATH", rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        items: Vec<u32>,
    }

    async fn extract(content_type: Option<&str>, body: impl Into<Body>) -> Result<Json<Order>, BffError> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        Json::<Order>::from_request(request.body(body.into()).unwrap(), &()).await
    }

    #[tokio::test]
    async fn json_bodies_are_typed_bounded_and_declared() {
        assert_eq!(extract(Some("application/json"), r#"{"items":[1,2]}"#).await.unwrap().0.items, [1, 2]);
        assert!(extract(Some("application/merge-patch+json; charset=utf-8"), r#"{"items":[]}"#).await.is_ok());
        let code = |r: Result<Json<Order>, BffError>| {
            let e = r.unwrap_err();
            (e.status().as_u16(), e.code())
        };
        assert_eq!(code(extract(None, "{}").await), (415, "UNSUPPORTED_MEDIA_TYPE"));
        assert_eq!(code(extract(Some("text/plain"), "{}").await), (415, "UNSUPPORTED_MEDIA_TYPE"));
        assert_eq!(code(extract(Some("application/json"), "{").await), (400, "INVALID_BODY"));
        // Two types, whichever comes first, are refused: what is in front may read the other.
        for types in [["application/json", "text/plain"], ["text/plain", "application/json"]] {
            let mut request = Request::builder().method("POST").uri("/");
            for content_type in types {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let e = Json::<Order>::from_request(request.body(Body::from(r#"{"items":[1]}"#)).unwrap(), &()).await;
            let e = e.unwrap_err();
            assert_eq!((e.status().as_u16(), e.code()), (415, "UNSUPPORTED_MEDIA_TYPE"), "{types:?}");
            assert!(e.to_string().contains("more than one"), "{e}");
        }
        // A body in a content coding is refused, not read as if it had none; `identity` is none.
        let coded = |codings: &[&[u8]]| {
            let mut request =
                Request::builder().method("POST").uri("/").header(header::CONTENT_TYPE, "application/json");
            for coding in codings {
                request =
                    request.header(header::CONTENT_ENCODING, axum::http::HeaderValue::from_bytes(coding).unwrap());
            }
            Json::<Order>::from_request(request.body(Body::from(r#"{"items":[1]}"#)).unwrap(), &())
        };
        for codings in [&[&b"gzip"[..]][..], &[b"br"], &[b"identity, GZIP"], &[b"identity", b"x-\xff"], &[b" deflate "]]
        {
            let e = coded(codings).await.unwrap_err();
            assert_eq!((e.status().as_u16(), e.code()), (415, "UNSUPPORTED_CONTENT_ENCODING"), "{codings:?}");
            let answer = axum::response::IntoResponse::into_response(e);
            assert_eq!(answer.headers()[header::ACCEPT_ENCODING], "identity");
        }
        for codings in [&[][..], &[&b"identity"[..]], &[b"IDENTITY", b""], &[b" , identity"]] {
            assert_eq!(coded(codings).await.unwrap().0.items, [1], "{codings:?}");
        }
        let e = coded(&[b"gzip"]).await.unwrap_err();
        assert!(e.to_string().contains("`gzip`"), "{e}");
        assert_eq!(code(extract(Some("application/json"), r#"{"items":"x"}"#).await), (400, "INVALID_BODY"));
        // Bytes that are not UTF-8 are not JSON text, and the detail says so.
        let e = extract(Some("application/json"), &b"{\"items\":[1],\"x\":\"\xff\"}"[..]).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "INVALID_BODY"));
        assert!(e.to_string().contains("invalid utf-8 sequence"), "{e}");
        let huge = format!(r#"{{"items":[{}1]}}"#, "1,".repeat(MAX_JSON_BODY));
        assert_eq!(code(extract(Some("application/json"), huge).await), (413, "BODY_TOO_LARGE"));
        // A client quoting a long string gets a bounded echo.
        let long = format!(r#"{{"items":"{}"}}"#, "x".repeat(10_000));
        let e = extract(Some("application/json"), long).await.unwrap_err();
        assert!(e.to_string().len() <= MAX_DETAIL + 4, "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_arriving_at_the_deadline_is_a_408() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        tx.send(Ok(axum::body::Bytes::from_static(b"{\"items\":["))).await.unwrap();
        let trickle = Body::from_stream(tokio_stream_of(rx));
        let start = Instant::now();
        let result = extract(Some("application/json"), trickle).await;
        let e = result.unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (408, "BODY_TIMEOUT"));
        assert_eq!(start.elapsed(), BODY_READ_TIMEOUT);
        drop(tx);
    }

    /// A stream of what arrives on `rx` (a body the test feeds by hand).
    fn tokio_stream_of<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Send + 'static {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}
