//! Reading a whole body into one buffer, under a size limit.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

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
pub(crate) async fn collect<B>(mut body: B, limit: usize) -> Result<Bytes, CollectError<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(CollectError::Read)?.into_data() else { continue };
        let so_far = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if so_far + data.len() > limit {
            return Err(CollectError::TooLarge(limit));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(head) => {
                joined.reserve(head.len() + data.len());
                joined.extend_from_slice(&head);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
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
