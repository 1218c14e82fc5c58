//! Reading a whole body into one buffer, under a size limit; and decoding a gzip one
//! ([`gunzip`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Body;

mod gunzip;

#[cfg(test)]
pub(crate) use gunzip::gzip;
pub(crate) use gunzip::{GunzipError, gunzip};

/// Sets an answer's `Content-Length` to the length its body would be sent with, for an answer to
/// a `HEAD` whose body is dropped: when that length is known ahead, the status has content, and
/// no length is set yet. Returns whether the length is known.
pub(crate) fn length_for_head<B: Body>(response: &mut http::Response<B>) -> bool {
    let Some(length) = response.body().size_hint().exact() else {
        return false;
    };
    let bodiless = matches!(response.status(), http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED);
    if !bodiless && !response.headers().contains_key(http::header::CONTENT_LENGTH) {
        response.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(length));
    }
    true
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError<E> {
    /// The body itself failed (a reset connection, a broken stream).
    #[error("reading the body: {0}")]
    Read(E),
    /// More than the limit arrived.
    #[error("body over the length limit of {0} bytes")]
    TooLarge(usize),
}

/// Reads `body` whole, failing past `limit` bytes. A body that arrives as one frame (a small JSON
/// answer with a length, or a handler's buffered response) is returned as is: no copy and no
/// allocation, where `http_body_util`'s `collect` queues frames and joins them.
///
/// The future is a named type, so a service can hold it in its own future without boxing.
pub(crate) fn collect<B>(body: B, limit: usize) -> Collect<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    Collect { body, limit, first: None, joined: BytesMut::new() }
}

/// The future of [`collect`].
#[derive(Debug)]
pub(crate) struct Collect<B> {
    body: B,
    limit: usize,
    first: Option<Bytes>,
    joined: BytesMut,
}

impl<B> Future for Collect<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<Bytes, CollectError<B::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        while let Some(frame) = ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            let Ok(data) = frame.map_err(CollectError::Read)?.into_data() else { continue };
            let so_far = this.first.as_ref().map_or(0, Bytes::len) + this.joined.len();
            if so_far + data.len() > this.limit {
                return Poll::Ready(Err(CollectError::TooLarge(this.limit)));
            }
            match this.first.take() {
                None if this.joined.is_empty() => this.first = Some(data),
                None => this.joined.extend_from_slice(&data),
                Some(head) => {
                    this.joined.reserve(head.len() + data.len());
                    this.joined.extend_from_slice(&head);
                    this.joined.extend_from_slice(&data);
                }
            }
        }
        Poll::Ready(Ok(this.first.take().unwrap_or_else(|| std::mem::take(&mut this.joined).freeze())))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::stream;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    use super::*;

    type Frames = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn frames(parts: &[&'static str]) -> Frames {
        let frames: Vec<_> = parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn one_frame_is_returned_without_a_copy() {
        let data = Bytes::from_static(b"{\"a\":1}");
        let collected = collect(Full::new(data.clone()), 1024).await.unwrap();
        assert_eq!(collected.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_and_empty_ones_skipped() {
        assert_eq!(collect(frames(&["ab", "", "cd", "e"]), 1024).await.unwrap(), Bytes::from_static(b"abcde"));
        assert_eq!(collect(frames(&["", "x"]), 1024).await.unwrap(), Bytes::from_static(b"x"));
        assert_eq!(collect(frames(&[]), 1024).await.unwrap(), Bytes::new());
    }

    #[tokio::test]
    async fn the_limit_is_exact() {
        assert_eq!(collect(frames(&["abc", "de"]), 5).await.unwrap().len(), 5);
        assert!(matches!(collect(frames(&["abc", "def"]), 5).await, Err(CollectError::TooLarge(5))));
        assert!(matches!(collect(frames(&["abcdef"]), 5).await, Err(CollectError::TooLarge(5))));
    }
}
