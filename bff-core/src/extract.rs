//! axum's `Path`, `Query` and `Json` extractors, rejecting bad input as problem+json.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::body::{CollectError, GunzipError, collect, gunzip};
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
/// `Accept-Encoding: identity`, rather than read as if it were not (unless it is `gzip` and
/// `server.request_body_codings` has it: then it is decoded, its decoded bytes held to the same
/// limit, and one that does not decode is a 400 `INVALID_BODY`), one still arriving at
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
        let route = route_of(request.extensions());
        let (deadline, limit, decode_gzip) = match request.extensions().get::<Arc<RequestMeta>>() {
            Some(meta) => (meta.deadline(route), meta.max_body_bytes(route), meta.policies.decode_gzip),
            None => (Instant::now() + BODY_READ_TIMEOUT, MAX_JSON_BODY, false),
        };
        let gzipped = match content_codings(headers) {
            (None, _) => false,
            (Some(coding), None) if decode_gzip && is_gzip(coding) => true,
            (Some(coding), _) => {
                let (read, reads) = match decode_gzip {
                    true => ("uncompressed, or in `gzip` once", "gzip, identity"),
                    false => ("uncompressed", "identity"),
                };
                let detail = format!(
                    "the body is sent in the `{}` content coding, which this endpoint does not read: send it {read}",
                    crate::problem::bounded(coding, 32)
                );
                return Err(BffError::UnsupportedContentEncoding { reads, detail });
            }
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
        let bytes = match gzipped {
            true => gunzip(&bytes, limit).map(axum::body::Bytes::from).map_err(|e| match e {
                GunzipError::TooLarge(_) => too_large(),
                invalid => BffError::bad_request("INVALID_BODY", invalid.to_string()),
            })?,
            false => bytes,
        };
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

/// The first two content codings other than `identity` that `Content-Encoding` names, as sent.
/// Read as bytes: a value that is not text names a coding all the same (and one no endpoint
/// reads).
fn content_codings(headers: &axum::http::HeaderMap) -> (Option<&str>, Option<&str>) {
    let mut codings = field::members(headers, header::CONTENT_ENCODING)
        .filter(|coding| !coding.eq_ignore_ascii_case(b"identity"))
        .map(|coding| std::str::from_utf8(coding).unwrap_or("(not text)"));
    (codings.next(), codings.next())
}

/// `gzip`, or `x-gzip`, its old name (RFC 9110 §8.4.1.3).
fn is_gzip(coding: &str) -> bool {
    coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")
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

    /// Each part its own gzip member, as a client that compresses as it goes may send.
    fn gzip(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|part| crate::body::gzip(part)).collect()
    }

    /// A POST of `body` with these `Content-Encoding` values, in a request whose route policies
    /// decode gzip when `decode` says so.
    async fn coded(decode: bool, codings: &[&str], body: Vec<u8>) -> Result<Json<Order>, BffError> {
        let mut meta = RequestMeta::detached(Duration::from_secs(10), 1);
        meta.policies.decode_gzip = decode;
        let mut request = Request::builder().method("POST").uri("/").header(header::CONTENT_TYPE, "application/json");
        for coding in codings {
            request = request.header(header::CONTENT_ENCODING, *coding);
        }
        let mut request = request.body(Body::from(body)).unwrap();
        request.extensions_mut().insert(Arc::new(meta));
        Json::<Order>::from_request(request, &()).await
    }

    /// With `gzip` among `server.request_body_codings`, a gzip body (or x-gzip, or several
    /// members) is decoded; its decoded bytes are held to the limit, found without decoding
    /// further than it; bytes that are not gzip, or whose checksum is wrong, are a 400; any other
    /// coding, or gzip twice, is still a 415; and without the setting gzip is refused as before.
    #[tokio::test]
    async fn a_gzip_body_is_decoded_when_configured_and_held_to_the_limit() {
        let code = |e: &BffError| (e.status().as_u16(), e.code());
        let order = gzip(&[br#"{"items":[1,2]}"#]);
        assert_eq!(coded(true, &["gzip"], order.clone()).await.unwrap().0.items, [1, 2]);
        assert_eq!(coded(true, &["X-Gzip"], order.clone()).await.unwrap().0.items, [1, 2]);
        assert_eq!(coded(true, &["identity", "gzip"], order.clone()).await.unwrap().0.items, [1, 2]);
        let members = gzip(&[br#"{"items":[3,"#, br#"4]}"#]);
        assert_eq!(coded(true, &["gzip"], members).await.unwrap().0.items, [3, 4]);
        assert_eq!(
            code(&coded(false, &["gzip"], order.clone()).await.unwrap_err()),
            (415, "UNSUPPORTED_CONTENT_ENCODING")
        );
        for codings in [&["gzip, gzip"][..], &["gzip", "gzip"], &["br"], &["deflate"]] {
            let e = coded(true, codings, order.clone()).await.unwrap_err();
            assert_eq!(code(&e), (415, "UNSUPPORTED_CONTENT_ENCODING"), "{codings:?}");
            assert!(e.to_string().contains("or in `gzip` once"), "{e}");
            // The answer lists what the endpoint reads, gzip now among them.
            let answer = axum::response::IntoResponse::into_response(e);
            assert_eq!(answer.headers()[header::ACCEPT_ENCODING], "gzip, identity", "{codings:?}");
        }
        // At the limit once decoded (JSON may pad with spaces), then one byte over it: a small
        // body that inflates past the limit is refused as a large one.
        let padded = |n: usize| [br#"{"items":[]}"#.as_slice(), &vec![b' '; n - 12]].concat();
        assert!(coded(true, &["gzip"], gzip(&[&padded(MAX_JSON_BODY)])).await.is_ok());
        let bomb = gzip(&[&padded(MAX_JSON_BODY + 1)]);
        assert!(bomb.len() < 1024, "{} bytes", bomb.len());
        assert_eq!(code(&coded(true, &["gzip"], bomb).await.unwrap_err()), (413, "BODY_TOO_LARGE"));
        let huge = gzip(&[&padded(64 * MAX_JSON_BODY)]);
        assert_eq!(code(&coded(true, &["gzip"], huge).await.unwrap_err()), (413, "BODY_TOO_LARGE"));
        // Not gzip at all; a checksum that does not match; cut short.
        let mut wrong_sum = order.clone();
        let at = wrong_sum.len() - 6;
        wrong_sum[at] ^= 0xff;
        let short = order[..order.len() - 4].to_vec();
        for broken in [br#"{"items":[1]}"#.to_vec(), wrong_sum, short, Vec::new()] {
            let e = coded(true, &["gzip"], broken).await.unwrap_err();
            assert_eq!(code(&e), (400, "INVALID_BODY"), "{e}");
        }
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
