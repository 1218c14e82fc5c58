//! A whole upstream response held in memory, to answer more than one caller: the followers of a
//! coalesced call, the hits of a cached one.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};

use super::Body;

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
