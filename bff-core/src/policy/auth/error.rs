//! Why a caller could not be authenticated.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::{ErrorReport, ErrorSource, Problem};

/// An authentication failure: 401 for the client's credentials, 403 for a missing scope or CSRF
/// defence, 503 when the keys or the sessions cannot be checked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    MissingToken,
    /// Neither a session cookie nor a bearer token, in a BFF with browser sessions.
    #[error("sign in at `/bff/login` for a session, or send a bearer token")]
    SignInRequired,
    /// The token is not a well-formed JWT, or uses an algorithm we do not accept.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// The token names a key the issuer does not publish.
    #[error("the bearer token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the bearer token's signature is invalid")]
    InvalidSignature,
    /// The token has expired.
    #[error("the bearer token has expired")]
    Expired,
    /// A claim is missing or wrong (issuer, audience, not-before).
    #[error("the bearer token is not valid here: {0}")]
    InvalidClaims(String),
    /// Two or more of the header that carries the credential (`authorization`, or the API key's):
    /// one reader may take the first and another the last.
    #[error("the request has more than one `{0}` header: send one")]
    Ambiguous(HeaderName),
    /// No API key header.
    #[error("an API key is required")]
    MissingApiKey,
    /// The API key is not one we know.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The issuer's keys could not be fetched, so no token can be checked.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
    /// The caller is authenticated but not granted a scope the route requires.
    #[error("this route requires the scope `{0}`")]
    InsufficientScope(String),
    /// The session cookie names no live session: it expired, was logged out, or its refresh
    /// was refused.
    #[error("the session has ended: sign in again")]
    SessionEnded,
    /// A cookie-authenticated call without its CSRF defences (`X-CSRF: 1`, an allowed `Origin`).
    #[error("{0}")]
    CsrfRequired(String),
    /// The session store cannot be read, so no session can be checked.
    #[error("sessions cannot be checked right now")]
    SessionsUnavailable,
}

impl AuthError {
    /// 401; 400 for two credentials; 403 for a missing scope; 503 when the keys are unavailable.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::KeysUnavailable | Self::SessionsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientScope(_) | Self::CsrfRequired(_) => StatusCode::FORBIDDEN,
            Self::Ambiguous(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken | Self::SignInRequired => "AUTH_REQUIRED",
            Self::Malformed(_) => "AUTH_MALFORMED",
            Self::UnknownKey => "AUTH_UNKNOWN_KEY",
            Self::InvalidSignature => "AUTH_INVALID_SIGNATURE",
            Self::Expired => "AUTH_EXPIRED",
            Self::InvalidClaims(_) => "AUTH_INVALID_CLAIMS",
            Self::Ambiguous(_) => "AUTH_AMBIGUOUS",
            Self::MissingApiKey => "API_KEY_REQUIRED",
            Self::InvalidApiKey => "API_KEY_INVALID",
            Self::KeysUnavailable => "AUTH_UNAVAILABLE",
            Self::InsufficientScope(_) => "AUTH_INSUFFICIENT_SCOPE",
            Self::SessionEnded => "SESSION_ENDED",
            Self::CsrfRequired(_) => "CSRF_REQUIRED",
            Self::SessionsUnavailable => "SESSION_UNAVAILABLE",
        }
    }

    /// The `WWW-Authenticate` challenge of a bearer-token failure (RFC 6750 §3).
    pub fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::KeysUnavailable
            | Self::MissingApiKey
            | Self::InvalidApiKey
            | Self::SessionEnded
            | Self::CsrfRequired(_)
            | Self::SessionsUnavailable => None,
            Self::MissingToken | Self::SignInRequired => Some(HeaderValue::from_static("Bearer")),
            Self::Ambiguous(name) if name == header::AUTHORIZATION => {
                Some(HeaderValue::from_static("Bearer error=\"invalid_request\""))
            }
            Self::Ambiguous(_) => None,
            Self::InsufficientScope(scope) => {
                let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
                Some(
                    HeaderValue::try_from(challenge)
                        .unwrap_or(HeaderValue::from_static("Bearer error=\"insufficient_scope\"")),
                )
            }
            _ => Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem::new(status, self.code(), self.to_string());
        let source =
            if status == StatusCode::SERVICE_UNAVAILABLE { ErrorSource::Upstream } else { ErrorSource::Downstream };
        let report = ErrorReport { code: self.code(), message: self.to_string(), source };
        let mut response = problem.into_response_with(report);
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
