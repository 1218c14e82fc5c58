//! Helpers for tests: serve a router on `127.0.0.1:0` and stop it on demand, a private
//! `redis-server`, and an HTTP/2 client that writes frames as they are ([`RawH2`]).

pub mod binary;
mod raw_h2;

pub use raw_h2::{RawFrame, RawH2, frame, header_block};

use std::net::SocketAddr;

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
    pub async fn start(router: impl Into<crate::App>) -> Self {
        Self::start_with(router, &ServerConfig::default()).await
    }

    /// Like [`TestServer::start`], under `config`'s limits.
    pub async fn start_with(router: impl Into<crate::App>, config: &ServerConfig) -> Self {
        Self::serve(Server::new(config), router.into()).await
    }

    /// Like [`TestServer::start`], served by `server` (its limits, TLS and metrics); a
    /// [`ReloadableApp`](crate::serve::ReloadableApp) may be replaced meanwhile.
    pub async fn serve(server: Server, router: impl Into<crate::serve::ReloadableApp>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, router.into(), rx));
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

/// A private `redis-server` on a free port of 127.0.0.1 for one test, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    /// Its certificate and key, when it speaks TLS.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The password it requires (`--requirepass`), when it requires one.
    password: Option<String>,
    child: Option<tokio::process::Child>,
}

/// How to get `redis-server`, printed by tests that skip without it.
pub const REDIS_MISSING: &str = "redis-server is not installed: `apt-get install redis-server` \
(Debian/Ubuntu) or `brew install redis`, then run the tests again; CI installs it (.ci/run)";

impl RedisServer {
    /// Starts one, waiting until it accepts connections. Without `redis-server` on the `PATH`:
    /// `None` after printing how to install it, or a panic when `CI=true` (CI must run these
    /// tests for real).
    pub async fn start() -> Option<Self> {
        Self::start_with(None, None).await
    }

    /// Like [`RedisServer::start`], requiring `password` (its [`RedisServer::url`] carries it).
    pub async fn start_with_password(password: &str) -> Option<Self> {
        Self::start_with(None, Some(password.to_owned())).await
    }

    /// Like [`RedisServer::start`], speaking TLS only (`rediss://`) with `cert` and `key` (PEM
    /// files), not asking clients for certificates.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Self> {
        Self::start_with(Some((cert.to_owned(), key.to_owned())), None).await
    }

    async fn start_with(
        tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
        password: Option<String>,
    ) -> Option<Self> {
        for _ in 0..5 {
            let port = steady_port();
            let mut server = Self { port, tls: tls.clone(), password: password.clone(), child: None };
            match server.spawn().await {
                Ok(()) => return Some(server),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                        panic!("{REDIS_MISSING}");
                    }
                    eprintln!("skipped: {REDIS_MISSING}");
                    return None;
                }
                // The port was taken meanwhile: another one.
                Err(e) => eprintln!("redis-server on port {port}: {e}; trying another port"),
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with TLS, `redis://:<password>@…` with a password).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        let auth = self.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// Kills it and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Freezes it (`SIGSTOP`): connections stay open and nothing is answered, as a hung Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(tokio::process::Child::id).expect("redis-server is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts it again on the same port, empty. The port is below the ephemeral range
    /// ([`steady_port`]), so no connection made meanwhile can have taken it.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await.unwrap_or_else(|e| panic!("redis-server did not start again on {}: {e}", self.port));
    }

    async fn spawn(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncBufReadExt;

        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let (cert, key);
        if let Some(password) = &self.password {
            args.extend(["--requirepass", password]);
        }
        match &self.tls {
            None => args.extend(["--port", &port]),
            Some((c, k)) => {
                (cert, key) = (c.to_string_lossy(), k.to_string_lossy());
                args.extend(["--port", "0", "--tls-port", &port, "--tls-cert-file", &cert, "--tls-key-file", &key]);
                args.extend(["--tls-auth-clients", "no"]);
            }
        }
        let mut child = tokio::process::Command::new("redis-server")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Ready to accept connections") {
                    return Ok(());
                }
            }
            Err(std::io::Error::other("redis-server exited before it was ready"))
        };
        match tokio::time::timeout(std::time::Duration::from_secs(20), ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("redis-server was not ready within 20 s")),
        }
        // Its log goes on to stdout: keep reading it, so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }
}

/// A port of 127.0.0.1 that nothing is bound to, for a process that must bind it itself (and may
/// bind it again after a restart). It is picked below the kernel's ephemeral range when there is
/// room, so that no outgoing connection and no port-0 bind elsewhere can take it before the
/// process binds it, or while the process restarts; else any free port.
pub fn steady_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;

    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 2048 {
        let below = low.saturating_sub(16384).max(1024)..low;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed_out = handed_out.get_or_insert_with(HashSet::new);
        for _ in 0..64 {
            let port = fastrand::u16(below.clone());
            if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    free.local_addr().expect("its address").port()
}
