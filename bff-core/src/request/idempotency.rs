//! The `Idempotency-Key` request header, checked once at the edge of a write.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header): a client's
/// name for one write, so a repeat after a lost answer does not write twice. Forward it to the
/// upstream that performs the write.
///
/// As an argument it is required (400 `IDEMPOTENCY_KEY_REQUIRED` when absent); as
/// `Option<IdempotencyKey>` it is optional. Either way a key longer than 255 bytes or with
/// characters other than visible ASCII is a 400 `INVALID_IDEMPOTENCY_KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub HeaderValue);

/// The header's name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

impl IdempotencyKey {
    fn from_parts(parts: &Parts) -> Result<Option<Self>, IdempotencyKeyRejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyRejection::Invalid);
        }
        Ok(Some(Self(value.clone())))
    }
}

/// Why an `Idempotency-Key` was refused: a 400 problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyKeyRejection {
    /// The write needs one and the request has none (`IDEMPOTENCY_KEY_REQUIRED`).
    Missing,
    /// Empty, too long, or not visible ASCII (`INVALID_IDEMPOTENCY_KEY`).
    Invalid,
}

impl IntoResponse for IdempotencyKeyRejection {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Missing => {
                let detail = "this write needs an Idempotency-Key header";
                Problem::new(StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED", detail)
            }
            Self::Invalid => {
                let detail = format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters");
                Problem::new(StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY", detail)
            }
        };
        problem.into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts)?.ok_or(IdempotencyKeyRejection::Missing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Self::from_parts(parts)
    }
}
