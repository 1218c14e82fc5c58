//! A whole upstream response held in memory, to answer more than one caller (the followers of a
//! coalesced call, the hits of a cached one), and what makes two calls the same call.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version};
use tokio::time::Instant;

use super::Body;
use super::outgoing::Outgoing;
use crate::identity::CallerHeaders;

/// What makes two GETs the same call, whoever makes it: the URI and every header the call set.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A call whose answer may serve others: a GET whose answer is read whole (not a stream), with its
/// caller and deadline.
pub(crate) struct Shareable {
    pub(crate) key: CallKey,
    pub(crate) caller: Option<CallerHeaders>,
    pub(crate) deadline: Instant,
}

impl Shareable {
    pub(crate) fn of(call: &Outgoing) -> Option<Self> {
        let (request, context) = (&call.request, &call.context);
        if request.method() != Method::GET || context.streamed || !request.body().is_buffered() {
            return None;
        }
        let headers = request.headers().iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let key = CallKey { uri: request.uri().clone(), headers };
        Some(Self { key, caller: context.caller.clone(), deadline: context.deadline })
    }
}

/// A response read whole: status, version, headers and body.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Snapshot {
    /// Holds `response`; gives it back when its body is a stream (it cannot be shared).
    pub(crate) fn of(response: Response<Body>) -> Result<Self, Box<Response<Body>>> {
        if !response.body().is_buffered() {
            return Err(Box::new(response));
        }
        let (parts, body) = response.into_parts();
        let body = body.into_buffered().unwrap_or_default();
        Ok(Self { status: parts.status, version: parts.version, headers: parts.headers, body })
    }

    /// A response of its own for one caller.
    pub(crate) fn to_response(&self) -> Response<Body> {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        response
    }

    /// Roughly the memory it holds, for caches bounded in bytes.
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
        self.body.len() + headers + 64
    }
}
