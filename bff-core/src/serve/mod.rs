//! Serving clients: one accept loop on hyper-util, HTTP/1.1 and HTTP/2 (h2c) on one port, with a
//! bound on everything a client could otherwise hold or grow.
//!
//! - **Connections**: at most `server.max_connections` open (kept below the process's open-file
//!   limit, itself raised to its hard limit at start); over it, a new connection is closed at
//!   once, never queued or left hanging.
//! - **Time**: the request head must arrive within `server.header_read_timeout` (which also bounds
//!   how long an HTTP/1.1 connection waits for its next request: hyper's one timer covers both),
//!   and a connection that moves no byte for `server.idle_timeout` is closed (HTTP/2 included,
//!   and a client that stops reading its response).
//! - **Size**: the request head is at most `server.max_header_bytes` (431), with at most
//!   `server.max_headers` headers (431); HTTP/2 gets the same header list limit, a cap on
//!   concurrent streams, and hyper's limits on reset streams (rapid reset, CVE-2023-44487).
//!   The URI length (414) and body size (413) are checked per request (`edge/limits.rs`,
//!   `extract::Json`).
//! - **Shutdown**: when `shutdown` completes, the listener closes, and in-flight requests get
//!   `server.shutdown_grace` to finish; connections still open then are dropped.

mod idle;
mod tls;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::add_extension::AddExtension;

use self::idle::IdleTimeout;
pub use self::tls::{RELOAD_CHECK_INTERVAL, Tls, TlsError};
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

/// The router as one connection serves it: with the peer's address.
type Served = AddExtension<Router, ConnectInfo<std::net::SocketAddr>>;

/// Serves a router on a listener under [`ServerConfig`]'s limits.
///
/// ```no_run
/// # async fn run(router: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let config = bff_core::config::ServerConfig::default();
/// bff_core::serve::Server::new(&config).serve(listener, router, bff_core::shutdown_signal()).await
/// # }
/// ```
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

    /// Counts connections (open, refused) in `metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves `router` until `shutdown` completes, then lets in-flight requests finish within
    /// the grace period.
    pub async fn serve(self, listener: TcpListener, router: Router, shutdown: impl Future + Send) -> io::Result<()> {
        let config = self.config;
        let counters = self.metrics.as_ref().map(ConnectionMetrics::new);
        let cap = connection_cap(config.max_connections);
        let permits = Arc::new(Semaphore::new(cap));
        let builder = Arc::new(builder(&config));
        let graceful = GracefulShutdown::new();
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
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Closed at once: the client sees the connection end, not a hang.
                if let Some(counters) = &counters {
                    counters.refused.increment(1);
                }
                drop(stream);
                continue;
            };
            if let Some(counters) = &counters {
                counters.open.increment(1.0);
            }
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            let watcher = graceful.watcher();
            // Handlers and limits read the client's address as axum's `ConnectInfo`.
            let service = TowerToHyperService::new(AddExtension::new(router.clone(), ConnectInfo(peer)));
            let open = counters.as_ref().map(|c| c.open.clone());
            let (idle, handshake) = (config.idle_timeout, config.header_read_timeout);
            let tls = self.tls.as_ref().map(|tls| tls.acceptor().clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_io(&builder, IdleTimeout::new(stream, idle), service, watcher).await,
                    Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_io(&builder, IdleTimeout::new(stream, idle), service, watcher).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake took too long"),
                    },
                }
                if let Some(open) = open {
                    open.decrement(1.0);
                }
                drop(permit);
            });
        }
        drop(listener);
        let open = cap - permits.available_permits();
        tracing::info!(connections = open, grace = ?config.shutdown_grace, "listener closed; finishing in-flight requests");
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await.is_err() {
            let open = cap - permits.available_permits();
            tracing::warn!(connections = open, "grace period over; closing the connections still open");
        }
        Ok(())
    }
}

/// Serves one connection's requests until it ends or the server shuts down.
async fn serve_io<IO>(
    builder: &Builder<TokioExecutor>,
    io: IO,
    service: TowerToHyperService<Served>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The connection series of a registry.
struct ConnectionMetrics {
    open: metrics::Gauge,
    refused: metrics::Counter,
}

impl ConnectionMetrics {
    fn new(metrics: &Metrics) -> Self {
        Self {
            open: metrics.gauge("bff_connections_open", &[]),
            refused: metrics.counter("bff_connections_refused_total", &[]),
        }
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
        .max_concurrent_streams(config.h2_max_concurrent_streams)
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
