//! The one error type of an upstream call, naming the service and what went wrong.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;

/// What went wrong with an upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect,
    /// No answer within the call's timeout or what was left of the request deadline.
    Timeout(Duration),
    /// The upstream answered with a non-2xx status.
    Status(StatusCode),
    /// The connection failed mid-exchange (reset, closed early).
    Transport,
    /// The body was not the JSON we expected.
    Decode,
    /// The call could not be built (a path, header or body the BFF made is invalid): our bug.
    Request,
    /// The request's body, a client's streamed on, failed while it was sent: it broke off, was
    /// malformed (a bad chunk), or its client went away. The client's doing, not the upstream's:
    /// a `400 INVALID_BODY`, and no failure for the breaker or the instances' ejection.
    RequestBody,
    /// The request's body, a client's streamed on, was not all sent within the time the call had
    /// (the value): its client sent it too slowly, or stopped. The client's doing, as for
    /// [`RequestBody`](Self::RequestBody): a `408 BODY_TIMEOUT`, no failure for the breaker.
    RequestBodyTimeout(Duration),
    /// The upstream's bulkhead was full (`max_in_flight` calls already in flight): the call was
    /// refused at once, not queued.
    Overloaded,
    /// The upstream's circuit breaker is open (it failed too often lately): the call was
    /// refused without being sent.
    CircuitOpen,
    /// A segment of the call's path is `.` or `..` once percent-decoded (the value here), which
    /// the upstream would resolve to another resource: refused without being sent. A client's
    /// value made it (`/orders/%2e%2e`), so it answers `400 INVALID_ID`, and `404` where the
    /// handler looks something up ([`BffError::when_not_found`](crate::BffError::when_not_found)).
    DotSegment(String),
}

/// An upstream call that failed, with the service's name.
///
/// `Display` is safe to show a client: it never contains upstream bodies. [`UpstreamError::cause`]
/// holds the underlying error text for logs.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    service: Arc<str>,
    kind: UpstreamErrorKind,
    cause: Option<String>,
    /// The upstream turned the call away before processing it (safe to send again, any method).
    unprocessed: bool,
}

impl UpstreamError {
    /// A new error of `kind` for `service`.
    pub fn new(service: Arc<str>, kind: UpstreamErrorKind) -> Self {
        Self { service, kind, cause: None, unprocessed: false }
    }

    /// Classifies an error that came out of an outbound stack: ours as they are, anything else
    /// (a tower layer's own error) as a transport failure with its text as the cause.
    pub(crate) fn from_stack(service: &Arc<str>, error: super::BoxError) -> Self {
        match error.downcast::<Self>() {
            Ok(error) => *error,
            Err(other) if other.is::<tower::load_shed::error::Overloaded>() => {
                Self::new(service.clone(), UpstreamErrorKind::Overloaded)
            }
            Err(other) => Self::new(service.clone(), UpstreamErrorKind::Transport).with_cause(other),
        }
    }

    /// Marks the call as turned away unprocessed (HTTP/2 `REFUSED_STREAM`, or past a `GOAWAY`).
    pub(crate) fn unprocessed(mut self) -> Self {
        self.unprocessed = true;
        self
    }

    /// Whether the upstream turned the call away before processing it, so that sending it again
    /// is safe whatever its method.
    pub(crate) fn is_unprocessed(&self) -> bool {
        self.unprocessed
    }

    /// Attaches the underlying error text, for logs only.
    pub(crate) fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// The upstream's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What went wrong.
    pub fn kind(&self) -> &UpstreamErrorKind {
        &self.kind
    }

    /// The underlying error text, if any (may quote upstream data: logs only).
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// Whether the upstream said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == UpstreamErrorKind::Status(StatusCode::NOT_FOUND)
    }

    /// Whether a client's value made the call's path climb out of its resource (`..`): the call
    /// was not sent, and no resource has that id.
    pub(crate) fn is_dot_segment(&self) -> bool {
        matches!(self.kind, UpstreamErrorKind::DotSegment(_))
    }

    /// Whether the request's own body (a client's, streamed on) failed or did not arrive in time.
    pub(crate) fn is_request_body(&self) -> bool {
        matches!(self.kind, UpstreamErrorKind::RequestBody | UpstreamErrorKind::RequestBodyTimeout(_))
    }

    /// Whether the call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, UpstreamErrorKind::Timeout(_))
    }

    /// 504 for a timeout, 503 for a full bulkhead or an open circuit, 500 for a call we could
    /// not build, 400 for a client's value that cannot be a path segment or a client's body that
    /// failed, 408 for a client's body that did not arrive in time, 502 for everything else.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            UpstreamErrorKind::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamErrorKind::DotSegment(_) | UpstreamErrorKind::RequestBody => StatusCode::BAD_REQUEST,
            UpstreamErrorKind::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            UpstreamErrorKind::Overloaded | UpstreamErrorKind::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamErrorKind::Request => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            UpstreamErrorKind::Connect => "UPSTREAM_UNAVAILABLE",
            UpstreamErrorKind::Timeout(_) => "UPSTREAM_TIMEOUT",
            UpstreamErrorKind::Status(_) => "UPSTREAM_BAD_STATUS",
            UpstreamErrorKind::Transport => "UPSTREAM_FAILED",
            UpstreamErrorKind::Decode => "UPSTREAM_BAD_RESPONSE",
            UpstreamErrorKind::Request => "INTERNAL_ERROR",
            UpstreamErrorKind::RequestBody => "INVALID_BODY",
            UpstreamErrorKind::RequestBodyTimeout(_) => "BODY_TIMEOUT",
            UpstreamErrorKind::Overloaded => "UPSTREAM_OVERLOADED",
            UpstreamErrorKind::CircuitOpen => "UPSTREAM_CIRCUIT_OPEN",
            UpstreamErrorKind::DotSegment(_) => "INVALID_ID",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = &self.service;
        match &self.kind {
            UpstreamErrorKind::Connect => write!(f, "upstream `{service}` is unreachable"),
            UpstreamErrorKind::Timeout(after) => {
                write!(f, "upstream `{service}` did not answer within {after:?}")
            }
            UpstreamErrorKind::Status(status) => {
                write!(f, "upstream `{service}` answered {}", status.as_u16())
            }
            UpstreamErrorKind::Transport => {
                write!(f, "the connection to upstream `{service}` failed")
            }
            UpstreamErrorKind::Decode => write!(f, "upstream `{service}` sent a response that could not be decoded"),
            UpstreamErrorKind::Request => write!(f, "the call to upstream `{service}` could not be built"),
            UpstreamErrorKind::RequestBody => {
                write!(f, "the request body broke off or was malformed; nothing was taken from upstream `{service}`")
            }
            UpstreamErrorKind::RequestBodyTimeout(after) => {
                write!(
                    f,
                    "the request body did not arrive within {after:?}; nothing was taken from upstream `{service}`"
                )
            }
            UpstreamErrorKind::Overloaded => write!(f, "upstream `{service}` has too many calls in flight"),
            UpstreamErrorKind::CircuitOpen => {
                write!(f, "upstream `{service}` is failing: calls to it are paused for a moment")
            }
            UpstreamErrorKind::DotSegment(value) => write!(f, "`{value}` cannot be used as an id"),
        }
    }
}

impl std::error::Error for UpstreamError {}
