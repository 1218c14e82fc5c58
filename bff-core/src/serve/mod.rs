//! Serving clients: one accept loop on hyper-util, HTTP/1.1 and HTTP/2 (h2c) on one port, with a
//! bound on everything a client could otherwise hold or grow.
//!
//! - **Connections** (`admission.rs`): at most `server.max_connections` open (kept below the
//!   process's open-file limit, itself raised to its hard limit at start), at most
//!   `server.max_connections_per_ip` from one address; at a cap the connection idle longest is
//!   closed to make room, and only when all are busy is a new one closed at once, never queued
//!   or left hanging.
//! - **Time** (`connection.rs`): the first request must start within
//!   `server.header_read_timeout` of the accept (TLS handshake included), and an HTTP/1.1
//!   connection waits that long for its next request's head; a connection with no request in
//!   flight is closed `server.idle_timeout` after its last response, whatever control frames it
//!   sends, and one whose requests stop moving (a client that reads nothing) after one to two
//!   such periods.
//! - **Memory** (`service.rs`): an HTTP/2 connection may leave `server.h2_max_unsent_bytes` of
//!   responses unread; past that its new streams are refused. Each stream's share of the
//!   protocol's send buffer is `server.h2_max_send_buf_bytes`, and at most
//!   `server.h2_max_concurrent_streams` are open.
//! - **Size**: the request head is at most `server.max_header_bytes` (431), with at most
//!   `server.max_headers` headers (431); HTTP/2 gets the same header list limit, and limits on
//!   reset streams, the client's (rapid reset, CVE-2023-44487) and those it makes the server
//!   reset (MadeYouReset, CVE-2025-8671). The URI length (414) and body size
//!   (413) are checked per request (`edge/limits.rs`, `extract::Json`).
//! - **Shutdown**: when `shutdown` completes, the listener closes, and in-flight requests get
//!   `server.shutdown_grace` to finish; connections still open then are dropped.

#![cfg_attr(not(any(test, feature = "test-util")), allow(unreachable_pub, reason = "public with `test-util` only"))]

mod admission;
mod connection;
mod reloadable;
mod service;
mod tls;
mod triggers;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use metrics::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use self::admission::{Admission, Refusal};
use self::connection::{Closed, Phase, Timers};
pub use self::reloadable::ReloadableApp;
pub(crate) use self::service::Tunnels;
use self::service::{ConnService, Shared};
pub use self::tls::{RELOAD_CHECK_INTERVAL, Tls, TlsError};
pub(crate) use self::triggers::{Triggers, stamp};
use crate::config::ServerConfig;
use crate::observe::metrics::Metrics;

/// The smallest read buffer hyper accepts; a smaller `max_header_bytes` is raised to it.
const MIN_HEAD_BUFFER: usize = 8 * 1024;

/// hyper's default header count; setting it explicitly makes hyper allocate the header array on
/// the heap per request, so it is set only when configured otherwise.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// How long the accept loop pauses after an error that is not one connection's (out of file
/// descriptors, say), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves a router on a listener under [`ServerConfig`]'s limits. A BFF gets one through
/// [`Gateway::serve`](crate::Gateway::serve); tests reach it with the `test-util` feature.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    metrics: Option<Metrics>,
    tls: Option<Tls>,
}

impl Server {
    /// A server with `config`'s limits.
    pub fn new(config: &ServerConfig) -> Self {
        Self { config: config.clone(), metrics: None, tls: None }
    }

    /// Serves HTTPS with `tls` (HTTP/2 or HTTP/1.1 by ALPN); the handshake must finish within
    /// `server.header_read_timeout`.
    pub fn tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// Counts connections (open, refused, closed and why) and unsent response bytes in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves `router` until `shutdown` completes, then lets in-flight requests finish within
    /// the grace period. A [`ReloadableApp`] may be replaced meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: impl Into<ReloadableApp>,
        shutdown: impl Future + Send,
    ) -> io::Result<()> {
        let router = router.into();
        let config = self.config;
        let metrics = ConnectionMetrics::new(&self.metrics.unwrap_or_default());
        let cap = connection_cap(config.max_connections);
        let admission = Arc::new(Admission::new(cap, config.connections_per_ip(), &config.trusted_proxies));
        let shared = Arc::new(Shared {
            max_unsent: config.h2_max_unsent_bytes,
            unsent: metrics.unsent.clone(),
            refused_streams: metrics.refused_streams.clone(),
        });
        let accepted = Accepted {
            builder: Arc::new(builder(&config)),
            timers: Timers { first_request: config.header_read_timeout, idle: config.idle_timeout },
            tls: self.tls,
            admission,
            shared,
            metrics: Arc::new(metrics),
            live: Arc::new(Live::default()),
        };
        let (phase, watching) = watch::channel(Phase::Serving);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot accept connections");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            accepted.spawn(stream, peer, router.clone(), watching.clone());
        }
        drop(listener);
        let live = &accepted.live;
        tracing::info!(connections = live.count(), grace = ?config.shutdown_grace, "listener closed; finishing in-flight requests");
        let _ = phase.send(Phase::Draining);
        if tokio::time::timeout(config.shutdown_grace, live.none()).await.is_err() {
            tracing::warn!(connections = live.count(), "grace period over; closing the connections still open");
            let _ = phase.send(Phase::Closing);
        }
        Ok(())
    }
}

/// What the accept loop hands each connection it lets in.
struct Accepted {
    builder: Arc<Builder<TokioExecutor>>,
    timers: Timers,
    tls: Option<Tls>,
    admission: Arc<Admission>,
    shared: Arc<Shared>,
    metrics: Arc<ConnectionMetrics>,
    live: Arc<Live>,
}

impl Accepted {
    /// Serves `stream` from `peer` on a task of its own, or closes it at once when it may not
    /// open.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, router: ReloadableApp, mut phase: watch::Receiver<Phase>) {
        let at = Instant::now();
        let admitted = match self.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // Closed at once: the client sees the connection end, not a hang.
                self.metrics.refused(refusal).increment(1);
                drop(stream);
                return;
            }
        };
        if admitted.evicted.is_some() {
            tracing::debug!(%peer, "closing an idle connection to make room for a new one");
        }
        let _ = stream.set_nodelay(true);
        let state = admitted.state;
        let service = ConnService::new(router, peer, state.clone(), self.shared.clone());
        let (builder, timers, admission, metrics) =
            (self.builder.clone(), self.timers, self.admission.clone(), self.metrics.clone());
        let tls = self.tls.as_ref().map(|tls| tls.acceptor().clone());
        let alive = LiveGuard::new(&self.live, &metrics);
        tokio::spawn(async move {
            let closed = match tls {
                None => connection::serve(&builder, stream, service, &state, timers, at, &mut phase).await,
                // On the heap: a task is as big as its largest branch, and the handshake and the
                // TLS stream would make every plain connection's task kilobytes larger.
                Some(acceptor) => Box::pin(async {
                    match tokio::time::timeout_at(at + timers.first_request, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection::serve(&builder, stream, service, &state, timers, at, &mut phase).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake took too long");
                            Some(Closed::NoRequest)
                        }
                    }
                })
                .await,
            };
            if let Some(reason) = closed {
                metrics.closed(reason).increment(1);
            }
            admission.release(&state);
            drop(alive);
        });
    }
}

/// The connection tasks still running, to wait for at shutdown.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    none_left: Notify,
}

impl Live {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes once no connection task is left.
    async fn none(&self) {
        loop {
            let notified = self.none_left.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One connection task, counted from its accept to its end.
struct LiveGuard {
    live: Arc<Live>,
    open: metrics::Gauge,
}

impl LiveGuard {
    fn new(live: &Arc<Live>, metrics: &ConnectionMetrics) -> Self {
        live.count.fetch_add(1, Ordering::AcqRel);
        metrics.open.increment(1.0);
        Self { live: live.clone(), open: metrics.open.clone() }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.open.decrement(1.0);
        if self.live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.none_left.notify_waiters();
        }
    }
}

/// The connection series of a registry.
struct ConnectionMetrics {
    open: metrics::Gauge,
    refused: [Counter; 2],
    closed: [Counter; Closed::ALL.len()],
    unsent: metrics::Gauge,
    refused_streams: Counter,
}

impl ConnectionMetrics {
    fn new(metrics: &Metrics) -> Self {
        let refused = [Refusal::Full, Refusal::PerAddress]
            .map(|r| metrics.counter("bff_connections_refused_total", &[("reason", r.label().to_owned())]));
        let closed =
            Closed::ALL.map(|c| metrics.counter("bff_connections_closed_total", &[("reason", c.label().to_owned())]));
        Self {
            open: metrics.gauge("bff_connections_open", &[]),
            refused,
            closed,
            unsent: metrics.gauge("bff_connection_unsent_bytes", &[]),
            refused_streams: metrics.counter("bff_h2_streams_refused_total", &[]),
        }
    }

    fn refused(&self, refusal: Refusal) -> &Counter {
        &self.refused[usize::from(refusal == Refusal::PerAddress)]
    }

    fn closed(&self, reason: Closed) -> &Counter {
        let at = Closed::ALL.iter().position(|c| *c == reason).unwrap_or(0);
        &self.closed[at]
    }
}

/// hyper's connection settings from `config`.
fn builder(config: &ServerConfig) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_HEAD_BUFFER));
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        // RFC 8441: WebSockets over HTTP/2, on passthrough routes that take them.
        .enable_connect_protocol()
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        // Streams a client opens and resets at once (rapid reset, CVE-2023-44487), and streams
        // it makes the server reset (MadeYouReset, CVE-2025-8671): past these counts the
        // connection is closed with ENHANCE_YOUR_CALM. h2's defaults, set here so that they stay.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .max_send_buf_size(config.h2_max_send_buf_bytes)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Connections that failed on their own: the next accept is unaffected.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// `configured`, kept below the process's open-file limit (raised to its hard limit first), with
/// a quarter of the descriptors left for upstream connections, files and the listener.
fn connection_cap(configured: usize) -> usize {
    let Some(files) = raise_open_file_limit() else { return configured };
    let usable = usize::try_from(files - files / 4).unwrap_or(usize::MAX).max(1);
    if configured > usable {
        tracing::warn!(
            configured,
            open_file_limit = files,
            cap = usable,
            "server.max_connections is over what the open-file limit allows; capping it"
        );
    }
    configured.min(usable)
}

/// Raises this process's soft open-file limit to its hard limit; the limit now in force.
#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Completes on Ctrl-C or SIGTERM, saying which.
pub async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let signal = tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = terminate => Signal::Terminate,
    };
    tracing::info!(?signal, "shutting down");
    signal
}

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C: someone at a terminal, who wants it to stop now.
    Interrupt,
    /// SIGTERM: an orchestrator, which first stops sending traffic once `/readyz` says so.
    Terminate,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap stays under three quarters of the open-file limit, which is raised to the hard one.
    #[cfg(unix)]
    #[test]
    fn the_connection_cap_stays_under_the_open_file_limit() {
        let cap = connection_cap(usize::MAX);
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(soft == hard || hard == rlimit::INFINITY, "the soft limit {soft} was not raised to {hard}");
        assert!((cap as u64) <= soft - soft / 4, "cap {cap} for a limit of {soft}");
        assert_eq!(connection_cap(10), 10);
    }
}
