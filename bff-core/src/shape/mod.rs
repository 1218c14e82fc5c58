//! Response shaping a BFF switches on in config (`[shaping]`): sparse fieldsets (`?fields=`),
//! ETags with `304 Not Modified`, and gzip/brotli compression.
//!
//! The projection itself ([`fields::project`]) is a pure function; the middlewares buffer a JSON
//! response once, shape it, and pass everything else through untouched.

pub mod etag;
pub mod fields;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;

/// The largest response body the shaping layers buffer; larger ones pass through unshaped.
pub const MAX_SHAPED_BODY: usize = 4 * 1024 * 1024;

/// Splits off a successful JSON response's body, or hands the response back untouched.
pub(crate) async fn json_body(
    response: Response,
) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let small = http_body::Body::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_SHAPED_BODY as u64);
    if !(response.status() == StatusCode::OK && is_json && small) {
        return Err(response);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_SHAPED_BODY).await {
        Ok(bytes) => Ok((parts, bytes)),
        // The size hint promised a small body; a body that errors mid-way cannot be answered anyway.
        Err(_) => Err(Response::from_parts(parts, Body::empty())),
    }
}
