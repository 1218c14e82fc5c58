//! The one error body, RFC 9457 `application/problem+json`, at the bottom of the module graph:
//! every error type converts into a [`Problem`], and the edge adds the request id when it answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Who caused an error (as pingora classifies them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we refuse (4xx).
    Downstream,
    /// A downstream service failed or was too slow (502, 503, 504).
    Upstream,
    /// Our own bug or misconfiguration (500).
    Internal,
}

impl ErrorSource {
    /// The usual source of a status: 4xx the client, 502–504 an upstream, the rest us.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            400..=499 => Self::Downstream,
            502..=504 => Self::Upstream,
            _ => Self::Internal,
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

/// The longest `detail` a problem carries: details quote client input (an id, a parser's
/// message), and an answer must not echo input of any size.
pub const MAX_DETAIL_BYTES: usize = 256;

/// `text` fit to echo to a client or into a header: at most `max` bytes, the `…` that marks a cut
/// included (cut at a character), every control character (line breaks included) replaced by `?`.
pub fn bounded(text: &str, max: usize) -> String {
    let clean = |c: char| if c.is_control() { '?' } else { c };
    let whole: usize = text.chars().map(|c| clean(c).len_utf8()).sum();
    if whole <= max {
        return text.chars().map(clean).collect();
    }
    let room = max.saturating_sub('…'.len_utf8());
    let mut out = String::with_capacity(max);
    for c in text.chars().map(clean) {
        if out.len() + c.len_utf8() > room {
            break;
        }
        out.push(c);
    }
    if max >= '…'.len_utf8() {
        out.push('…');
    }
    out
}

impl Problem {
    /// A problem with `status`, a stable `code` and a `detail` for people (bounded: see
    /// [`bounded`] and [`MAX_DETAIL_BYTES`]).
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let detail = if detail.len() <= MAX_DETAIL_BYTES && !detail.chars().any(char::is_control) {
            detail
        } else {
            bounded(&detail, MAX_DETAIL_BYTES)
        };
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            code,
            request_id: None,
            service: None,
        }
    }

    /// Names the upstream at fault.
    pub(crate) fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The response: the JSON body, and the problem and `report` as extensions for the layers
    /// outside (the edge renders it again with the request id; the access log reads the report).
    pub(crate) fn into_response_with(self, report: ErrorReport) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response.extensions_mut().insert(self);
        response.extensions_mut().insert(report);
        response
    }

    /// The serialized document.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let report = ErrorReport {
            code: self.code,
            message: self.detail.clone(),
            source: ErrorSource::of(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),
        };
        self.into_response_with(report)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded_and_free_of_control_characters() {
        let problem =
            Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no order `{}\nFORGED`", "x".repeat(10_000)));
        assert_eq!(problem.detail.len(), MAX_DETAIL_BYTES, "the cut and its mark fill the bound exactly");
        assert!(problem.detail.ends_with('…'));
        assert_eq!(bounded("a\r\nb\u{7f}é", 64), "a??b?é");
        assert_eq!(bounded("ééé", 6), "ééé", "fits: not cut");
        assert_eq!(bounded("éééé", 6), "é…");
        assert_eq!(bounded("ééé", 4), "…");
        assert_eq!(bounded("abc", 2), "", "no room even for the mark");
        for max in 0..40 {
            let text = "aé\u{85}ü€ ".repeat(5);
            assert!(bounded(&text, max).len() <= max, "{max}");
        }
        assert_eq!(Problem::new(StatusCode::NOT_FOUND, "X", "plain").detail, "plain");
    }

    proptest::proptest! {
        /// No control character survives, and the text fits the room it is given.
        #[test]
        fn a_bounded_text_has_no_control_character_and_fits(text in "\\PC*|[\\x00-\\x1f\\x7f\\u{85}a-z]{0,300}", max in 3usize..300) {
            let out = bounded(&text, max);
            proptest::prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
            proptest::prop_assert!(out.len() <= max, "{} > {max}", out.len());
        }
    }
}
