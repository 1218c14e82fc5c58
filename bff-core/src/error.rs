//! One error type for every handler and layer, rendered as RFC 9457 `application/problem+json`.
//!
//! Errors are classified by where they come from (as pingora does): the client, an upstream, or
//! ourselves. The body never carries an upstream body or a stack trace.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::policy::auth::AuthError;
use crate::upstream::UpstreamError;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we refuse (4xx).
    Downstream,
    /// A downstream service failed or was too slow (502, 503, 504).
    Upstream,
    /// Our own bug or misconfiguration (500).
    Internal,
}

/// Every error a BFF request can end with.
#[derive(Debug, thiserror::Error)]
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
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request deadline passed before the answer was ready.
    #[error("the request deadline passed")]
    DeadlineExceeded,
    /// Our bug or misconfiguration; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(Cow<'static, str>),
}

impl BffError {
    /// A 400 with a code and a detail.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { code, detail: detail.into() }
    }

    /// Turns an upstream 404 into a client 404 with `detail`; other errors stay as they are.
    ///
    /// For resource endpoints whose id comes from the client: `GET /orders/{id}` of an unknown id
    /// is the client's mistake, not an upstream failure.
    pub fn when_not_found(self, detail: impl Into<String>) -> Self {
        match self {
            Self::Upstream(e) if e.is_not_found() => Self::NotFound(detail.into()),
            other => other,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Upstream(e) => e.status(),
            Self::Auth(e) => e.status(),
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Upstream(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::BadRequest { code, .. } => code,
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Who caused it.
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::Upstream(_) | Self::DeadlineExceeded => ErrorSource::Upstream,
            Self::Auth(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => ErrorSource::Upstream,
            Self::Auth(_) | Self::BadRequest { .. } | Self::NotFound(_) | Self::MethodNotAllowed => {
                ErrorSource::Downstream
            }
            Self::Internal(_) => ErrorSource::Internal,
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            // Internal details stay in the log.
            Self::Internal(_) => "the gateway failed to handle this request".to_owned(),
            other => other.to_string(),
        };
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            code: self.code(),
            request_id: crate::request::current_request_id(),
            service: match self {
                Self::Upstream(e) => Some(e.service().to_owned()),
                _ => None,
            },
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `about:blank`: the status and `code` say what happened.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for people.
    pub detail: String,
    /// A stable SCREAMING_SNAKE code, for machines.
    pub code: &'static str,
    /// The request id, to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The upstream at fault, for upstream errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// What the access log needs to know about an error response, carried as a response extension.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    /// The problem's code.
    pub code: &'static str,
    /// The full error text, internal details included.
    pub message: String,
    /// Who caused it.
    pub source: ErrorSource,
}

impl IntoResponse for BffError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Self::Auth(e) = &self
            && let Some(challenge) = e.challenge()
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response.extensions_mut().insert(ErrorReport {
            code: problem.code,
            message: self.to_string(),
            source: self.source_kind(),
        });
        response
    }
}
