//! One error type for every handler, rendered as RFC 9457 `application/problem+json`.
//!
//! Errors are classified by where they come from (as pingora does): the client, an upstream, or
//! ourselves. The body never carries an upstream body or a stack trace.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::policy::auth::AuthError;
pub use crate::problem::{ErrorReport, ErrorSource, Problem};
use crate::upstream::UpstreamError;

/// Every error a BFF request can end with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BffError {
    /// A required upstream call failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The caller's identity could not be established.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed; `code` says how (`INVALID_QUERY`, `UNKNOWN_FIELD`, …).
    #[error("{detail}")]
    BadRequest {
        /// A stable SCREAMING_SNAKE code.
        code: &'static str,
        /// What is wrong, for people.
        detail: String,
    },
    /// The client's request is refused with another 4xx status (409, 413, 415, 422, …), or with
    /// a 501 for a part of HTTP the gateway does not implement.
    #[error("{detail}")]
    Rejected {
        /// A 4xx status, or 501.
        status: StatusCode,
        /// A stable SCREAMING_SNAKE code.
        code: &'static str,
        /// What is wrong, for people.
        detail: String,
    },
    /// The request body is in a content coding the endpoint does not read: a 415
    /// `UNSUPPORTED_CONTENT_ENCODING` whose answer says which it reads in `Accept-Encoding`
    /// (RFC 9110 §12.5.3).
    #[error("{detail}")]
    UnsupportedContentEncoding {
        /// The codings the endpoint reads, as `Accept-Encoding` lists them: `identity`, or
        /// `gzip, identity` where `server.request_body_codings` has `gzip`.
        reads: &'static str,
        /// What is wrong, for people.
        detail: String,
    },
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The gateway cannot take the request now (it is at its limit of requests in flight, or
    /// cannot count a rate limit): a 503 with `Retry-After: 1`, which the client may retry soon.
    #[error("{detail}")]
    Unavailable {
        /// A stable SCREAMING_SNAKE code (`OVERLOADED`, `RATE_LIMIT_UNAVAILABLE`).
        code: &'static str,
        /// What is wrong, for people.
        detail: String,
    },
    /// Our bug or misconfiguration; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(Cow<'static, str>),
}

impl BffError {
    /// A 400 with a code and a detail.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { code, detail: detail.into() }
    }

    /// A refusal with a 4xx `status` (anything else is taken as 400).
    pub fn rejected(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        let status = if status.is_client_error() { status } else { StatusCode::BAD_REQUEST };
        Self::Rejected { status, code, detail: detail.into() }
    }

    /// A 409: the request conflicts with the state of a resource (out of stock, already done).
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::rejected(StatusCode::CONFLICT, code, detail)
    }

    /// A 422 `IDEMPOTENCY_KEY_REUSED`: the upstream of a keyed write says the key was used with
    /// another request body (draft-ietf-httpapi-idempotency-key-header answers that with a 422).
    pub fn idempotency_key_reused() -> Self {
        let detail = "this Idempotency-Key was used with a different request body";
        Self::rejected(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED", detail)
    }

    /// A 413 `BODY_TOO_LARGE`: a request body over its route's `limit` (in bytes).
    pub fn body_too_large(limit: u64) -> Self {
        Self::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// Turns an upstream 404 into a client 404 with `detail`; other errors stay as they are.
    ///
    /// For resource endpoints whose id comes from the client: `GET /orders/{id}` of an unknown id
    /// is the client's mistake, not an upstream failure. An id that cannot name a resource at all
    /// (`..`, refused before any call) is not found either.
    pub fn when_not_found(self, detail: impl Into<String>) -> Self {
        match self {
            Self::Upstream(e) if e.is_not_found() || e.is_dot_segment() => Self::NotFound(detail.into()),
            other => other,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Upstream(e) => e.status(),
            Self::Auth(e) => e.status(),
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Rejected { status, .. } => *status,
            Self::UnsupportedContentEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Upstream(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::BadRequest { code, .. } | Self::Rejected { code, .. } | Self::Unavailable { code, .. } => code,
            Self::UnsupportedContentEncoding { .. } => "UNSUPPORTED_CONTENT_ENCODING",
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Who caused it.
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::Upstream(e) if e.kind() == &crate::upstream::UpstreamErrorKind::Request => ErrorSource::Internal,
            Self::Upstream(e) if e.is_dot_segment() || e.is_request_body() => ErrorSource::Downstream,
            Self::Upstream(_) | Self::Unavailable { .. } => ErrorSource::Upstream,
            Self::Auth(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => ErrorSource::Upstream,
            Self::Auth(_)
            | Self::BadRequest { .. }
            | Self::Rejected { .. }
            | Self::UnsupportedContentEncoding { .. }
            | Self::NotFound(_)
            | Self::MethodNotAllowed => ErrorSource::Downstream,
            Self::Internal(_) => ErrorSource::Internal,
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let detail = match self {
            // Internal details stay in the log.
            Self::Internal(_) => "the gateway failed to handle this request".to_owned(),
            other => other.to_string(),
        };
        let problem = Problem::new(self.status(), self.code(), detail);
        match self {
            Self::Upstream(e) => problem.with_service(e.service()),
            _ => problem,
        }
    }
}

impl IntoResponse for BffError {
    fn into_response(self) -> Response {
        if let Self::Auth(e) = self {
            return e.into_response();
        }
        let problem = self.problem();
        let report = ErrorReport { code: problem.code, message: self.to_string(), source: self.source_kind() };
        let retry_soon = matches!(self, Self::Unavailable { .. });
        let reads = match self {
            Self::UnsupportedContentEncoding { reads, .. } => Some(reads),
            _ => None,
        };
        let mut response = problem.into_response_with(report);
        if retry_soon {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(reads) = reads {
            response.headers_mut().insert(axum::http::header::ACCEPT_ENCODING, HeaderValue::from_static(reads));
        }
        response
    }
}
