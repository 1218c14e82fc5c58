//! Response shaping a BFF switches on in config (`[shaping]`): sparse fieldsets (`?fields=`),
//! ETags with `304 Not Modified`, and gzip/brotli compression.
//!
//! The projection itself ([`fields::project`]) is a pure function; the middlewares buffer a JSON
//! response once, shape it, and pass everything else through untouched.

#![cfg_attr(not(any(test, feature = "test-util")), allow(unreachable_pub, reason = "public with `test-util` only"))]

pub mod etag;
pub mod fields;

use std::convert::Infallible;
use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::Either;
use serde_json::Value;
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{And, NotForContentType, Predicate};

use crate::config::ShapingConfig;
use crate::error::BffError;
use crate::middleware::{Inner, Middleware, run};
use crate::request::route_of;

/// The largest response body the shaping layers buffer; larger ones pass through unshaped.
pub const MAX_SHAPED_BODY: usize = 4 * 1024 * 1024;

/// Room made in a shaped answer's header map for the headers added to it from here out (the
/// ETag, `Vary` and `Cache-Control`, the request id, `X-Content-Type-Options`, a `RateLimit` pair):
/// made while it holds the handler's two or so, where growing it later, at its seventh, rehashes
/// and moves every header it holds by then.
const ANSWER_HEADERS: usize = 10;

/// The shaping middleware: `fields=`, ETags and compression, as `config` switches them on.
///
/// One middleware rather than one per concern: each layer costs at least a boxed future per
/// request, whether or not it has work to do. Compression wraps the rest, so the ETag is that of
/// the uncompressed representation.
#[derive(Clone)]
pub(crate) struct Shape {
    config: ShapingConfig,
    /// tower-http's compression, configured once: gzip and brotli, for what is worth it.
    compression: Compression,
}

type Compression = CompressionLayer<WorthIt>;

type WorthIt = And<And<NotForContentType, NotForContentType>, NotForContentType>;

/// What is worth compressing: tower-http's default predicate less its own 32-byte floor
/// (`compression_min_bytes` decides size).
fn worth_it() -> WorthIt {
    NotForContentType::GRPC.and(NotForContentType::IMAGES).and(NotForContentType::SSE)
}

impl Shape {
    pub(crate) fn new(config: ShapingConfig) -> Self {
        Self { config, compression: CompressionLayer::new().gzip(true).br(true).compress_when(worth_it()) }
    }
}

impl Middleware for Shape {
    fn call<S: Inner>(&self, mut request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        // A passthrough route's answers go out as the upstream sent them.
        let config = match route_of(request.extensions()) {
            Some(route) if !route.shaped => {
                ShapingConfig { fields: false, etag: false, compression: false, ..self.config }
            }
            _ => self.config,
        };
        // A `HEAD` is shaped as the `GET` it stands for, its body dropped after, so that its
        // ETag, length and coding are the `GET`'s (RFC 9110 §9.3.2): the router answers a `HEAD`
        // with its body gone, which would leave nothing to tag, project or measure.
        let head = request.method() == Method::HEAD && (config.fields || config.etag || config.compression);
        if head {
            *request.method_mut() = Method::GET;
        }
        shape(config, self.compression.clone(), request, inner, head)
    }
}

/// The answer to a `HEAD`: `response`'s head, with the `Content-Length` its body would have been
/// sent with, and no body. A body of a length not known before it is read (a compressed one) is
/// left for the connection to drop unsent, as it drops every answer's to a `HEAD`: in its place,
/// an empty body would claim a length of zero.
fn head_of(mut response: Response) -> Response {
    if crate::body::length_for_head(&mut response) {
        *response.body_mut() = Body::empty();
    }
    response
}

/// The answer of `next`, shaped, then compressed; for a `HEAD` (`head`), without its body. Chained
/// rather than written as one `async fn`, whose future would hold the request and the inner
/// service beside the future they went into.
fn shape<S: Inner>(
    config: ShapingConfig,
    compression: Compression,
    request: Request,
    next: S,
    head: bool,
) -> impl Future<Output = Response> + Send + 'static {
    let accepted = config.compression.then(|| chosen_encoding(request.headers())).flatten();
    FutureExt::then(fields_and_etag(config, request, next), move |mut response| {
        let sized = config.compression && !smaller_than(&response, config.compression_min_bytes);
        match accepted {
            // Boxed: the compression layer's future is large, and most answers are not compressed.
            // A compressed body's length is not known ahead: a `HEAD`'s is left as it is.
            Some(accepted) if sized => Either::Left(Box::pin(compress(compression, accepted, response))),
            _ => {
                // An answer that would be compressed for a client taking gzip or brotli varies
                // by `Accept-Encoding` as much as a compressed one: the compression layer says so
                // of both, but a client taking neither is not sent through it.
                if sized && accepted.is_none() && compressible(&response) {
                    response.headers_mut().append(header::VARY, HeaderValue::from_static("accept-encoding"));
                }
                Either::Right(std::future::ready(if head { head_of(response) } else { response }))
            }
        }
    })
}

/// Whether the compression layer compresses `response` for a client that takes a coding it
/// writes (whatever its size): not already coded, not a range, of a type worth it.
fn compressible(response: &Response) -> bool {
    let headers = response.headers();
    !headers.contains_key(header::CONTENT_ENCODING)
        && !headers.contains_key(header::CONTENT_RANGE)
        && worth_it().should_compress(response)
}

/// Compresses a finished response with `compression` in `encoding` (see [`chosen_encoding`]).
/// Applied after the rest of shaping, so a body too small to be worth it never enters the
/// compression layer at all.
async fn compress(compression: Compression, encoding: HeaderValue, response: Response) -> Response {
    let mut request = Request::new(Body::empty());
    request.headers_mut().insert(header::ACCEPT_ENCODING, encoding);
    let mut response = Some(response);
    // `oneshot` calls the service exactly once, so the response is always there to take.
    let answer = tower::service_fn(move |_: Request| {
        std::future::ready(Ok::<_, Infallible>(response.take().unwrap_or_default()))
    });
    match compression.layer(answer).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// Whether the body's size is known and below `min` (a streamed body of unknown size is not).
fn smaller_than(response: &Response, min: u64) -> bool {
    let size = http_body::Body::size_hint(response.body()).exact().or_else(|| {
        response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    });
    size.is_some_and(|size| size < min)
}

/// The coding an answer is compressed in: brotli or gzip, whichever the request's
/// `Accept-Encoding` names with the higher weight (brotli on a tie), or none when it names
/// neither with a weight above 0 (RFC 9110 §12.5.3). The compression layer is then told that
/// coding alone. A client that accepts neither gets the answer untouched, in no coding, whatever
/// else it excludes (`identity;q=0`, `*;q=0`): the layer would answer such a client `406` after
/// the handler ran, a write included, and with the handler's body; and wrapping the answer for
/// identity would still hide its length and make it chunked.
fn chosen_encoding(headers: &HeaderMap) -> Option<HeaderValue> {
    match accepted_weights(headers) {
        (0, 0) => None,
        (br, gzip) if br >= gzip => Some(HeaderValue::from_static("br")),
        _ => Some(HeaderValue::from_static("gzip")),
    }
}

/// The weights, in thousandths, that `Accept-Encoding` gives brotli and gzip: 0 for a coding it
/// does not name, or excludes.
pub(crate) fn accepted_weights(headers: &HeaderMap) -> (u16, u16) {
    let (mut br, mut gzip) = (0u16, 0u16);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let slot = match parts.next().unwrap_or_default().trim_ascii() {
                c if c.eq_ignore_ascii_case(b"br") => &mut br,
                c if c.eq_ignore_ascii_case(b"gzip") => &mut gzip,
                _ => continue,
            };
            let weight = parts.find_map(|p| p.trim_ascii().strip_prefix(b"q=")).map_or(Some(1000), weight);
            // An entry with a malformed weight is ignored, as an unknown coding is.
            if let Some(weight) = weight {
                *slot = (*slot).max(weight);
            }
        }
    }
    (br, gzip)
}

/// A weight (`qvalue`, RFC 9110 §12.4.2: `0`, `1`, or up to three decimals), in thousandths.
fn weight(q: &[u8]) -> Option<u16> {
    let (whole, fraction) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = fraction.iter().chain(std::iter::repeat(&b'0')).take(3).fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `fields=` and ETags in one pass over the handler's response: the body is buffered once,
/// projected, hashed, and answered as `304` when the client already has it.
async fn fields_and_etag<S: Inner>(config: ShapingConfig, request: Request, next: S) -> Response {
    if !(config.fields || config.etag) {
        return run(next, request).await;
    }
    let fields = match config.fields.then(|| fields::requested(&request)).flatten() {
        Some(Ok(fields)) => Some(fields),
        Some(Err(e)) => return BffError::bad_request("INVALID_FIELDS", e).into_response(),
        None => None,
    };
    let conditional: Option<Vec<HeaderValue>> = (config.etag
        && matches!(*request.method(), Method::GET | Method::HEAD))
    .then(|| request.headers().get_all(header::IF_NONE_MATCH).iter().cloned().collect());
    let response = run(next, request).await;
    if fields.is_none() && conditional.is_none() {
        return response;
    }
    let (mut parts, mut body) = match json_body(response).await {
        Ok(split) => split,
        Err(untouched) => return untouched,
    };
    parts.headers.reserve(ANSWER_HEADERS);
    if let Some(fields) = &fields {
        let Ok(value) = crate::json::from_bytes::<Value>(&body) else {
            return Response::from_parts(parts, Body::from(body));
        };
        match fields::project(value, fields) {
            Ok(projected) => body = Bytes::from(serde_json::to_vec(&projected).unwrap_or_default()),
            Err(path) => {
                let detail = format!("`fields` names `{path}`, which this resource does not have");
                return BffError::bad_request("UNKNOWN_FIELD", detail).into_response();
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(conditional) = conditional {
        let tag = etag::etag(&body);
        if etag::matches(&conditional, &tag) {
            let mut not_modified = Response::new(Body::empty());
            *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [header::CACHE_CONTROL, header::VARY, header::EXPIRES, header::CONTENT_LOCATION] {
                if let Some(value) = parts.headers.get(&name) {
                    not_modified.headers_mut().insert(name, value.clone());
                }
            }
            not_modified.headers_mut().insert(header::ETAG, tag);
            return not_modified;
        }
        parts.headers.insert(header::ETAG, tag);
    }
    Response::from_parts(parts, Body::from(body))
}

/// Splits off a successful JSON response's body, or hands the response back untouched.
async fn json_body(response: Response) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let small = http_body::Body::size_hint(response.body()).upper().is_some_and(|n| n <= MAX_SHAPED_BODY as u64);
    if !(response.status() == StatusCode::OK && is_json && small) {
        return Err(response);
    }
    let (parts, body) = response.into_parts();
    match crate::body::collect(body, MAX_SHAPED_BODY).await {
        Ok(bytes) => Ok((parts, bytes)),
        // The size hint promised a small body; a body that errors mid-way cannot be answered anyway.
        Err(_) => Err(Response::from_parts(parts, Body::empty())),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{size_of, size_of_val};

    use axum::Json;

    use super::*;

    /// Every request's future carries the shaping's: it holds the shaping of the answer and
    /// little more, not the request and the inner service a second time, nor the compression
    /// layer's future (boxed, for the answers that are compressed).
    #[tokio::test]
    async fn the_shaping_future_holds_the_shaping_and_little_else() {
        let config = ShapingConfig { fields: true, etag: true, compression: true, compression_min_bytes: 0 };
        let inner = tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(Json(serde_json::json!({"a": 1, "b": 2})).into_response())
        });
        let shaping = fields_and_etag(config, Request::new(Body::empty()), inner);
        let request = Request::builder()
            .uri("/x?fields=a")
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap();
        let shaped = Middleware::call(&Shape::new(config), request, inner);
        // What the shaped answer waits with besides: the encodings asked for, the compression
        // layer and the config.
        let beside = size_of::<Option<HeaderValue>>() + size_of::<Compression>() + size_of::<ShapingConfig>();
        assert!(
            size_of_val(&shaped) <= size_of_val(&shaping) + beside + 32,
            "shaping is {} bytes, the shaped answer's future {}",
            size_of_val(&shaping),
            size_of_val(&shaped)
        );
        let response = shaped.await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(response.headers().contains_key(header::ETAG));
    }

    /// A `HEAD` gets the head the `GET` would: the router answers a `HEAD` with its body gone,
    /// so the shaping asks it for the `GET` and drops the body after. Its ETag, its `304`, its
    /// projected length and its coding are the `GET`'s.
    #[tokio::test]
    async fn a_head_is_shaped_as_its_get() {
        let body = serde_json::json!({"name": "Ada", "badge": "gold", "pad": "x".repeat(2000)});
        let router = axum::Router::new().route("/x", axum::routing::get(move || std::future::ready(Json(body))));
        let config = ShapingConfig { fields: true, etag: true, compression: true, compression_min_bytes: 1024 };
        let shape = Shape::new(config);
        let answer = |method: Method, uri: &str, headers: &[(header::HeaderName, &str)]| {
            let mut request = Request::builder().method(method).uri(uri);
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            Middleware::call(&shape, request.body(Body::empty()).unwrap(), router.clone())
        };
        // The fields a client sees: the length as the header says, or as the connection writes
        // it from a body of known size.
        let head_of = |response: &Response| {
            let header = |name| response.headers().get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned());
            let known = http_body::Body::size_hint(response.body()).exact().filter(|_| response.status() == 200);
            let length = header(header::CONTENT_LENGTH).or(known.map(|n| n.to_string()));
            [header(header::ETAG), length, header(header::CONTENT_ENCODING)]
        };
        let gzip = [(header::ACCEPT_ENCODING, "gzip")];
        for (uri, headers) in [("/x", &[][..]), ("/x?fields=name", &[]), ("/x", &gzip)] {
            let get = answer(Method::GET, uri, headers).await;
            let head = answer(Method::HEAD, uri, headers).await;
            assert_eq!((head.status(), head_of(&head)), (get.status(), head_of(&get)), "{uri} {headers:?}");
            assert!(head_of(&get)[0].is_some(), "tagged");
            let sent = axum::body::to_bytes(head.into_body(), usize::MAX).await.unwrap();
            assert!(sent.is_empty() || headers == gzip, "a HEAD's known-length body is dropped here");
        }
        let get = answer(Method::GET, "/x?fields=name", &[]).await;
        assert_eq!(head_of(&get)[1].as_deref(), Some("14"), "the projection's length");
        let tag = get.headers()[header::ETAG].to_str().unwrap().to_owned();
        let head = answer(Method::HEAD, "/x?fields=name", &[(header::IF_NONE_MATCH, &tag)]).await;
        assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
        assert!(!head.headers().contains_key(header::CONTENT_LENGTH));
        let compressed = answer(Method::HEAD, "/x", &gzip).await;
        assert_eq!(head_of(&compressed)[1], None, "a compressed body's length is not known ahead");
    }

    /// An answer the layer would compress says it varies by `Accept-Encoding` once, to a client
    /// that takes no coding too; one that would go out as it is (too small, an event stream, or
    /// compression off) does not.
    #[tokio::test]
    async fn what_would_be_compressed_varies_by_accept_encoding_for_every_client() {
        let answer = |compression: bool, content_type: &'static str, size: usize, coding: &'static str| {
            let config = ShapingConfig { fields: false, etag: false, compression, compression_min_bytes: 100 };
            let inner = tower::service_fn(move |_: Request| async move {
                Ok::<_, Infallible>(([(header::CONTENT_TYPE, content_type)], "x".repeat(size)).into_response())
            });
            let request = Request::builder().header(header::ACCEPT_ENCODING, coding).body(Body::empty()).unwrap();
            async move {
                let response = Middleware::call(&Shape::new(config), request, inner).await;
                let vary: Vec<_> = response.headers().get_all(header::VARY).iter().cloned().collect();
                (response.headers().get(header::CONTENT_ENCODING).cloned(), vary)
            }
        };
        let varies = vec![HeaderValue::from_static("accept-encoding")];
        for coding in ["identity", "gzip;q=0", "deflate"] {
            assert_eq!(answer(true, "application/json", 100, coding).await, (None, varies.clone()), "{coding}");
        }
        let gzip = Some(HeaderValue::from_static("gzip"));
        assert_eq!(answer(true, "application/json", 100, "gzip").await, (gzip, varies.clone()));
        assert_eq!(answer(true, "application/json", 99, "identity").await, (None, vec![]));
        assert_eq!(answer(true, "text/event-stream", 1000, "identity").await, (None, vec![]));
        assert_eq!(answer(false, "application/json", 1000, "identity").await, (None, vec![]));
    }

    #[test]
    fn the_coding_is_the_one_the_client_weighs_highest_of_brotli_and_gzip() {
        let chosen = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::ACCEPT_ENCODING, HeaderValue::from_bytes(value).unwrap());
            }
            chosen_encoding(&headers).map(|v| v.to_str().unwrap().to_owned())
        };
        let some = |coding: &str| Some(coding.to_owned());
        assert_eq!(chosen(&[b"gzip"]), some("gzip"));
        assert_eq!(chosen(&[b"gzip, deflate, br"]), some("br"));
        assert_eq!(chosen(&[b"GZIP ; q=0.5", b"br;q=0.4"]), some("gzip"));
        assert_eq!(chosen(&[b"br;q=0.001"]), some("br"));
        assert_eq!(chosen(&[b"gzip;q=1.000, br;q=1"]), some("br"));
        // Excluded, or never named: no coding, whatever else is excluded.
        for none in [&b"gzip;q=0"[..], b"gzip;q=0, identity;q=0, *;q=0", b"identity;q=0", b"*", b"deflate", b"", b"\xff"] {
            assert_eq!(chosen(&[none]), None, "{:?}", String::from_utf8_lossy(none));
        }
        assert_eq!(chosen(&[b"gzip;q=0", b"identity;q=0, *;q=0"]), None);
        // A malformed weight ignores its entry.
        for odd in [&b"gzip;q=nan"[..], b"gzip;q=2", b"gzip;q=1.5", b"gzip;q=0.1234", b"gzip;q=-1", b"gzip;q=", b"gzip;q=.5"] {
            assert_eq!(chosen(&[odd]), None, "{:?}", String::from_utf8_lossy(odd));
        }
        assert_eq!(chosen(&[b"gzip;q=0.5x, br;q=0.2"]), some("br"));
    }
}
