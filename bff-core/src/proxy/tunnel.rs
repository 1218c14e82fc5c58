//! A WebSocket through a passthrough route. It is opened either way a client may open one:
//!
//! - over HTTP/1.1, a `GET` with `Connection: Upgrade` and `Upgrade: websocket` (RFC 6455),
//!   answered `101 Switching Protocols`;
//! - over HTTP/2, an extended `CONNECT` with `:protocol = websocket` on one stream (RFC 8441; the
//!   server advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`), answered `200`.
//!
//! Upstream it is always opened over HTTP/1.1, the way every WebSocket server takes one: an HTTP/2
//! opening becomes a `GET` with the upgrade headers and a `Sec-WebSocket-Key` of the gateway's
//! (RFC 8441 §5 has the client send none), and the upstream's `101` becomes the client's `200`.
//! Once both sides have switched, the bytes (the same RFC 6455 frames either way) are copied both
//! ways until either side closes, or until no byte has moved for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) use crate::websocket::Opening;
use crate::websocket::extended_connect;

impl Opening {
    /// The upgrade headers of the HTTP/1.1 request that opens it upstream, set on `forwarded`
    /// (the client's headers, hop-by-hop ones already removed).
    pub(super) fn upstream_headers(self, forwarded: &mut HeaderMap) {
        forwarded.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        forwarded.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if self == Self::ExtendedConnect {
            let nonce = fastrand::u128(..).to_le_bytes();
            let key = base64::engine::general_purpose::STANDARD.encode(nonce);
            if let Ok(key) = HeaderValue::try_from(key) {
                forwarded.insert(SEC_WEBSOCKET_KEY, key);
            }
        }
    }

    /// Turns the upstream's `101` into this opening's answer (its hop-by-hop headers already
    /// removed): `101` with the upgrade headers, or `200` without the HTTP/1.1 handshake's
    /// `Sec-WebSocket-Accept`.
    pub(super) fn answer(self, status: &mut StatusCode, headers: &mut HeaderMap) {
        match self {
            Self::Upgrade => {
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            }
            Self::ExtendedConnect => {
                *status = StatusCode::OK;
                headers.remove(SEC_WEBSOCKET_ACCEPT);
            }
        }
    }
}

/// The method a request is routed by: `GET` for an HTTP/2 WebSocket opening (RFC 8441 puts
/// `CONNECT` on the wire where HTTP/1.1 has `GET`), its own otherwise.
pub(super) fn routing_method<'a>(method: &'a Method, extensions: &axum::http::Extensions) -> &'a Method {
    const GET: &Method = &Method::GET;
    if extended_connect(method, extensions) { GET } else { method }
}

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
