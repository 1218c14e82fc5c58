//! A WebSocket through a passthrough route: once the client's connection and the upstream's have
//! both switched protocols (`101`), bytes are copied both ways until either side closes, or
//! until no byte has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copies between the two upgraded connections; see [the module docs](self).
pub(super) async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "a WebSocket upgrade did not complete");
            return;
        }
    };
    pump(TokioIo::new(client), TokioIo::new(upstream), idle).await;
}

/// Copies between `client` and `upstream` until either closes or nothing moves for `idle`.
async fn pump<A, B>(client: A, upstream: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let moved = Arc::new(AtomicU64::new(0));
    let mut client = Counted { io: client, moved: moved.clone() };
    let mut upstream = Counted { io: upstream, moved: moved.clone() };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let mut copy = std::pin::pin!(copy);
    let mut seen = 0;
    loop {
        tokio::select! {
            copied = copy.as_mut() => {
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "a WebSocket tunnel ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(idle) => {
                let now = moved.load(Ordering::Relaxed);
                if now == seen {
                    tracing::debug!(?idle, "closing a WebSocket tunnel idle for the idle timeout");
                    return;
                }
                seen = now;
            }
        }
    }
}

/// An upgraded connection that counts the bytes read from it into `moved`.
struct Counted<T> {
    io: T,
    moved: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.moved.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_cross_both_ways_and_a_silent_tunnel_closes_after_the_idle_timeout() {
        let (mut client, client_end) = tokio::io::duplex(1024);
        let (mut upstream, upstream_end) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(60);
        let pumping = tokio::spawn(pump(client_end, upstream_end, idle));
        client.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream.write_all(b"back").await.unwrap();
        let mut got = [0; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
        // Traffic every 50 s keeps it open past several idle periods...
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"x").await.unwrap();
            upstream.read_exact(&mut [0; 1]).await.unwrap();
        }
        assert!(!pumping.is_finished());
        // ...and none for two periods closes it.
        tokio::time::sleep(idle * 2 + Duration::from_secs(1)).await;
        assert!(pumping.is_finished(), "a silent tunnel is closed");
        assert_eq!(client.read(&mut [0; 1]).await.unwrap(), 0, "the client sees it end");
    }
}
