//! The body of an upstream request or response: empty, one buffer, or a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use super::BoxError;

/// A request or response body of the outbound stack.
///
/// An enum rather than a boxed trait object: the common cases (no body, a JSON buffer, hyper's
/// own response body) cost no allocation, and a buffered body can be cloned for a retry.
#[derive(Debug, Default)]
pub struct Body(Kind);

#[derive(Debug, Default)]
enum Kind {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
    /// A stream sent as a request's body, watched.
    Sent(UnsyncBoxBody<Bytes, BoxError>, Arc<SentBody>),
}

/// What became of a request's streamed body while it was sent: read to its end, or failed (its
/// source, a client's body, broke off or was malformed). It tells a client's failure from the
/// upstream's however the connection reports it.
#[derive(Debug, Default)]
pub(crate) struct SentBody {
    finished: AtomicBool,
    failed: AtomicBool,
}

impl SentBody {
    /// Whether the body failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the body was read to its end.
    pub(crate) fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Self(Kind::Empty)
    }

    /// Any streaming body (a proxied request, a test's chunked answer).
    pub fn stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self(Kind::Stream(body.map_err(Into::into).boxed_unsync()))
    }

    /// Watches this body as a request's, sent upstream ([`SentBody`]). A buffered body cannot
    /// fail nor keep the upstream waiting: `None`, and it is left as it is, not moved.
    pub(crate) fn watch(&mut self) -> Option<Arc<SentBody>> {
        if !matches!(self.0, Kind::Incoming(_) | Kind::Stream(_)) {
            return None;
        }
        let watch = Arc::new(SentBody::default());
        self.0 = match std::mem::take(&mut self.0) {
            Kind::Incoming(body) => Kind::Sent(body.map_err(Into::into).boxed_unsync(), watch.clone()),
            Kind::Stream(body) => Kind::Sent(body, watch.clone()),
            other => other,
        };
        Some(watch)
    }

    /// A copy for another attempt, when the body is buffered (a stream cannot be sent twice).
    pub(crate) fn try_clone(&self) -> Option<Self> {
        match &self.0 {
            Kind::Empty => Some(Self(Kind::Empty)),
            Kind::Full(bytes) => Some(Self(Kind::Full(bytes.clone()))),
            Kind::Incoming(_) | Kind::Stream(_) | Kind::Sent(..) => None,
        }
    }

    /// Whether the body is one buffer (or empty): read whole already.
    pub(crate) fn is_buffered(&self) -> bool {
        matches!(self.0, Kind::Empty | Kind::Full(_))
    }

    /// The bytes, if the body is one buffer (or empty) and has not been read.
    pub(crate) fn into_buffered(self) -> Option<Bytes> {
        match self.0 {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(bytes) => Some(bytes.unwrap_or_default()),
            Kind::Incoming(_) | Kind::Stream(_) | Kind::Sent(..) => None,
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() { Self(Kind::Empty) } else { Self(Kind::Full(Some(bytes))) }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from(Bytes::from(bytes))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Self::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(body: hyper::body::Incoming) -> Self {
        Self(Kind::Incoming(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Stream(body) => Pin::new(body).poll_frame(cx),
            Kind::Sent(body, watch) => {
                let frame = Pin::new(&mut *body).poll_frame(cx);
                match &frame {
                    Poll::Ready(Some(Err(_))) => watch.failed.store(true, Ordering::Relaxed),
                    // The connection may stop asking once the body says it has ended.
                    Poll::Ready(None) => watch.finished.store(true, Ordering::Relaxed),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => watch.finished.store(true, Ordering::Relaxed),
                    _ => {}
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Stream(body) | Kind::Sent(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) => body.size_hint(),
            Kind::Stream(body) | Kind::Sent(body, _) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    #[tokio::test]
    async fn buffered_bodies_clone_and_streams_do_not() {
        let full = Body::from(Bytes::from_static(b"{}"));
        assert_eq!(full.size_hint().exact(), Some(2));
        let copy = full.try_clone().expect("a buffer clones");
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "{}");
        assert!(Body::empty().try_clone().is_some());
        let stream = Body::stream(http_body_util::Full::new(Bytes::from_static(b"x")));
        assert!(stream.try_clone().is_none());
        assert_eq!(stream.collect().await.unwrap().to_bytes(), "x");
    }
}
