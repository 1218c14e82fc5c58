//! The accept loop: HTTP/1.1, or HTTP/2 without TLS (h2c, prior knowledge) when a connection opens
//! with the HTTP/2 preface; with a way for a handler to reset its own connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::stats::Stats;

/// Lets a handler tear down the connection it is answering on (the `reset` fault). Over HTTP/2
/// that fails every call on the connection, as a crashing server would.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    pub(crate) fn kill(&self) {
        self.0.notify_one();
    }
}

/// Serves `router` on `listener` until the task is aborted.
///
/// Sockets are set to linger zero so that dropping one sends a TCP RST: a killed connection looks to
/// the client exactly like a peer that reset it.
pub(crate) async fn serve(listener: TcpListener, router: Router, stats: Stats) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                stats.connection_accepted();
                stream
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        let kill = Arc::new(Notify::new());
        let router = router.clone();
        let conn_kill = ConnectionKill(kill.clone());
        let service = tower::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(conn_kill.clone());
            router.clone().oneshot(request.map(Body::new))
        });
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
}
