//! One client connection: what its requests are doing, and when it has been held long enough.
//!
//! The server closes a connection:
//! - when no request has started `server.header_read_timeout` after it was accepted: a socket
//!   that sends nothing, a TLS handshake and nothing after, an HTTP/2 preface alone, a header
//!   block never finished;
//! - `server.idle_timeout` after its last response ended, when no request is in flight, whatever
//!   else it sends: HTTP/2 PINGs, SETTINGS and WINDOW_UPDATEs are not requests (an HTTP/1.1
//!   connection is closed sooner, by hyper, when its next head does not start within
//!   `header_read_timeout`);
//! - when requests are in flight but nothing of them moved (a response head, a body frame read
//!   or written) for a whole `idle_timeout` period: a client that stopped reading its answers,
//!   or an upload that stopped arriving;
//! - when the admission table closes it to make room for a new connection (it had no request in
//!   flight: `serve/admission.rs`);
//! - when the server shuts down, gracefully, within `server.shutdown_grace`.
//!
//! Its requests report to one [`ConnState`] (`serve/service.rs`), with atomics only: the
//! connection's task looks at it when its one timer fires.
//!
//! A WebSocket tunnel is part of its connection: on HTTP/1.1 the connection's task runs it once
//! hyper has handed the socket over; on HTTP/2 (one stream, RFC 8441) a task of its own runs it,
//! counted as a request in flight whose every wake is progress, and ended with the connection.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::service::ConnService;

/// How long a connection closed for being idle or evicted gets to say goodbye (an HTTP/2 GOAWAY
/// and its PING) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where the server is in its life, as its connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Serving.
    Serving,
    /// Shutting down: finish what is in flight, take nothing new.
    Draining,
    /// The grace period is over: drop what is still open.
    Closing,
}

/// Why the server closed a connection (the label of `bff_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// No request started within `header_read_timeout` of the accept.
    NoRequest,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// Requests in flight, and nothing of them moved for `idle_timeout`.
    Stalled,
    /// Closed to make room for a new connection.
    Evicted,
    /// The server shut down.
    Shutdown,
}

impl Closed {
    pub(super) const ALL: [Self; 5] = [Self::NoRequest, Self::Idle, Self::Stalled, Self::Evicted, Self::Shutdown];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::NoRequest => "no_request",
            Self::Idle => "idle",
            Self::Stalled => "stalled",
            Self::Evicted => "evicted",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What a connection's requests are doing, shared by them (through [`ConnService`]), the
/// connection's task and the admission table.
#[derive(Debug)]
pub(crate) struct ConnState {
    id: u64,
    /// The client address as the per-address cap counts it.
    address: IpAddr,
    /// The server's start: times are kept as nanoseconds since it, to be compared across
    /// connections.
    epoch: Instant,
    /// Requests whose response has not ended (been taken whole by the connection, or dropped).
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// Bumped by every request-level event: a request started or ended, a response head, a body
    /// frame read or handed over.
    progress: AtomicU64,
    /// When `in_flight` last fell to 0 (or the accept).
    idle_since: AtomicU64,
    /// Response bytes given to this connection and not yet taken by it (`serve/service.rs`).
    unsent: AtomicUsize,
    evict: Notify,
    /// What the connection becomes once hyper hands its socket over after a `101 Switching
    /// Protocols` (a WebSocket tunnel), set by the handler that answered it.
    tunnel: TunnelCell,
    /// Set once the connection's task is done with it: the HTTP/2 streams' tunnels end with it.
    ended: watch::Sender<bool>,
}

/// A connection's tunnel-to-be.
#[derive(Default)]
struct TunnelCell(std::sync::Mutex<Option<BoxFuture<'static, ()>>>);

impl std::fmt::Debug for TunnelCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelCell").finish_non_exhaustive()
    }
}

impl ConnState {
    pub(super) fn new(id: u64, address: IpAddr, epoch: Instant) -> Self {
        let state = Self {
            id,
            address,
            epoch,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            unsent: AtomicUsize::new(0),
            evict: Notify::new(),
            tunnel: TunnelCell::default(),
            ended: watch::Sender::new(false),
        };
        state.idle_since.store(state.since_epoch(Instant::now()), Ordering::Relaxed);
        state
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn address(&self) -> IpAddr {
        self.address
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.moved();
    }

    pub(super) fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.since_epoch(Instant::now()), Ordering::Relaxed);
        }
        self.moved();
    }

    /// Something of a request moved.
    pub(super) fn moved(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether no request is in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Since when it has had no request in flight, in nanoseconds since the server started.
    pub(super) fn idle_since(&self) -> u64 {
        self.idle_since.load(Ordering::Relaxed)
    }

    pub(super) fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }

    pub(super) fn add_unsent(&self, bytes: usize) {
        self.unsent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn sub_unsent(&self, bytes: usize) {
        self.unsent.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Runs `tunnel` once the connection's socket has been handed over.
    pub(super) fn set_tunnel(&self, tunnel: BoxFuture<'static, ()>) {
        *self.tunnel.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tunnel);
    }

    fn take_tunnel(&self) -> Option<BoxFuture<'static, ()>> {
        self.tunnel.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Asks the connection's task to close it (gracefully: it had no request in flight).
    pub(super) fn evict(&self) {
        self.evict.notify_one();
    }

    /// When the timer fires at `now`: close, or look again at the instant returned. `seen` is the
    /// progress count the last look saw.
    fn check(&self, now: Instant, idle: Duration, seen: &mut u64) -> Result<Instant, Closed> {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Err(Closed::NoRequest);
        }
        let progress = self.progress.load(Ordering::Relaxed);
        let moved = std::mem::replace(seen, progress) != progress;
        if self.is_idle() {
            let until = self.epoch + Duration::from_nanos(self.idle_since()) + idle;
            return if now >= until { Err(Closed::Idle) } else { Ok(until) };
        }
        if moved { Ok(now + idle) } else { Err(Closed::Stalled) }
    }
}

/// The timers of a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timers {
    /// `server.header_read_timeout`: the first request must start within it of the accept.
    pub(super) first_request: Duration,
    /// `server.idle_timeout`.
    pub(super) idle: Duration,
}

/// Serves one connection's requests until it ends, the server closes it (see the module docs),
/// or the server shuts down; `None` when it ended on its own (the client closed it, or it failed).
pub(super) async fn serve<IO>(
    builder: &Builder<TokioExecutor>,
    io: IO,
    service: ConnService,
    state: &ConnState,
    timers: Timers,
    accepted: Instant,
    phase: &mut watch::Receiver<Phase>,
) -> Option<Closed>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ended = Ended(state);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let timer = tokio::time::sleep_until(accepted + timers.first_request);
    let mut timer = std::pin::pin!(timer);
    let mut seen = 0;
    let reason = loop {
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return match state.take_tunnel() {
                    Some(tunnel) => run_tunnel(tunnel, state, phase).await,
                    None => None,
                };
            }
            () = &mut timer => match state.check(Instant::now(), timers.idle, &mut seen) {
                Ok(next) => timer.as_mut().reset(next),
                Err(reason) => break reason,
            },
            () = state.evict.notified() => break Closed::Evicted,
            changed = phase.changed() => {
                // A server gone without saying so is shutting down too.
                if changed.is_err() || *phase.borrow_and_update() != Phase::Serving {
                    break Closed::Shutdown;
                }
            }
        }
    };
    if matches!(reason, Closed::Stalled | Closed::NoRequest) || state.requests.load(Ordering::Relaxed) == 0 {
        // Its client reads nothing, or has asked for nothing: no goodbye is owed.
        return Some(reason);
    }
    connection.as_mut().graceful_shutdown();
    let given_up = async {
        if reason == Closed::Shutdown {
            // Until the server's grace period is over.
            while *phase.borrow_and_update() != Phase::Closing {
                if phase.changed().await.is_err() {
                    return;
                }
            }
        } else {
            tokio::time::sleep(CLOSE_GRACE).await;
        }
    };
    tokio::select! {
        _ = connection => {}
        () = given_up => {}
    }
    Some(reason)
}

/// Runs the tunnel of one HTTP/2 stream (an extended `CONNECT`) on a task of its own, until it
/// ends or its connection does (which, on shutdown, is when the grace period is over). It counts
/// as a request in flight meanwhile, and each wake of it as progress, so the connection is
/// neither idle nor stalled while it carries one.
pub(super) fn spawn_stream_tunnel(state: Arc<ConnState>, tunnel: BoxFuture<'static, ()>) {
    state.request_started();
    tokio::spawn(async move {
        let mut ended = state.ended.subscribe();
        tokio::select! {
            () = Progressing { inner: tunnel, state: &state } => {}
            _ = ended.wait_for(|ended| *ended) => {}
        }
        state.request_ended();
    });
}

/// A future whose every poll is progress of its connection.
struct Progressing<'a> {
    inner: BoxFuture<'static, ()>,
    state: &'a ConnState,
}

impl Future for Progressing<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.state.moved();
        self.inner.as_mut().poll(cx)
    }
}

/// Tells the streams' tunnels their connection is done, however [`serve`] returns.
struct Ended<'a>(&'a ConnState);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.ended.send_replace(true);
    }
}

/// Runs a connection's tunnel until it ends, or until the server's grace period is over on
/// shutdown. It counts as a request in flight meanwhile: a tunnel is never the idle connection
/// closed to make room.
async fn run_tunnel(
    tunnel: BoxFuture<'static, ()>,
    state: &ConnState,
    phase: &mut watch::Receiver<Phase>,
) -> Option<Closed> {
    state.request_started();
    let closing = async {
        while *phase.borrow_and_update() != Phase::Closing {
            if phase.changed().await.is_err() {
                return;
            }
        }
    };
    let closed = tokio::select! {
        () = tunnel => None,
        () = closing => Some(Closed::Shutdown),
    };
    state.request_ended();
    closed
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
