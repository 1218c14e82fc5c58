//! Closing connections that move no bytes: an I/O wrapper with one timer per connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// `io`, failing with `TimedOut` once a whole `idle` period passes in which a read or a
    /// write was waited on and no byte moved either way.
    ///
    /// The timer is re-armed lazily: each read or write that moves bytes only sets a flag, and
    /// when the timer fires on a connection that was active, it starts a new period. So a quiet
    /// connection is closed between one and two periods after its last byte, and a busy one
    /// costs a flag store per I/O call rather than a timer reset.
    pub(crate) struct IdleTimeout<IO> {
        #[pin]
        io: IO,
        // Boxed, so the wrapper is `Unpin` when `io` is (hyper's connections need that).
        timer: Pin<Box<Sleep>>,
        idle: Duration,
        active: bool,
    }
}

impl<IO> IdleTimeout<IO> {
    pub(crate) fn new(io: IO, idle: Duration) -> Self {
        Self { io, timer: Box::pin(tokio::time::sleep(idle)), idle, active: false }
    }
}

/// Called when a read or write is pending: whether the connection has been idle too long.
fn expired(timer: &mut Pin<Box<Sleep>>, active: &mut bool, idle: Duration, cx: &mut Context<'_>) -> bool {
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if !std::mem::take(active) {
            return true;
        }
        timer.as_mut().reset(Instant::now() + idle);
    }
}

/// A write's outcome, noting whether it moved bytes, or the idle error if it is pending too long.
fn watch_write(
    written: Poll<io::Result<usize>>,
    timer: &mut Pin<Box<Sleep>>,
    active: &mut bool,
    idle: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match written {
        Poll::Ready(result) => {
            *active |= matches!(result, Ok(n) if n > 0);
            Poll::Ready(result)
        }
        Poll::Pending if expired(timer, active, idle, cx) => Poll::Ready(Err(timed_out())),
        Poll::Pending => Poll::Pending,
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<IO: AsyncRead> AsyncRead for IdleTimeout<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(result) => {
                *this.active |= buf.filled().len() > before;
                Poll::Ready(result)
            }
            Poll::Pending if expired(this.timer, this.active, *this.idle, cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for IdleTimeout<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.io.poll_write(cx, data);
        watch_write(written, this.timer, this.active, *this.idle, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.io.poll_write_vectored(cx, bufs);
        watch_write(written, this.timer, this.active, *this.idle, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_times_out_and_an_active_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        let mut client = client;
        let mut byte = [0u8; 1];
        // Bytes every 6 s keep it open well past one period.
        for _ in 0..5 {
            let read = server.read(&mut byte);
            let write = async {
                tokio::time::sleep(Duration::from_secs(6)).await;
                client.write_all(b"x").await.unwrap();
            };
            let (read, ()) = tokio::join!(read, write);
            assert_eq!(read.unwrap(), 1);
        }
        // Then nothing: it fails within two periods.
        let start = Instant::now();
        let error = server.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited <= Duration::from_secs(20), "{waited:?}");
    }
}
