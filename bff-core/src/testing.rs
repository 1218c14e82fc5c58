//! Helpers for tests: serve a router on `127.0.0.1:0` and stop it on demand.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::serve::Server;

/// A router served in the background on an ephemeral port.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` first (so it is ready when this returns), then serves `router` with
    /// the default server limits.
    pub async fn start(router: Router) -> Self {
        Self::start_with(router, &ServerConfig::default()).await
    }

    /// Like [`TestServer::start`], under `config`'s limits.
    pub async fn start_with(router: Router, config: &ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::new(config).serve(listener, router, rx));
        Self { addr, shutdown: Some(tx), task }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a graceful shutdown and waits until the server has stopped.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.begin_shutdown();
        self.stopped().await
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server task to end (after [`TestServer::begin_shutdown`]).
    pub async fn stopped(mut self) -> std::io::Result<()> {
        (&mut self.task).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
