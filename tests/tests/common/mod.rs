//! Shared set-up: mock services and a BFF in-process on ephemeral ports.

#![allow(dead_code)]

pub mod browser;

use std::future::Future;
use std::time::Duration;

use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::serve::Server;
use bff_core::testing::TestServer;
use bff_core::{App, ConfigError, Gateway};
use services_mock::{Faults, MockConfig, MockServices, Service, StatsSnapshot};

/// The mocks and one BFF in front of them.
pub struct Stack {
    pub mocks: MockServices,
    pub bff: TestServer,
    /// The admin router (`/metrics`, `/readyz`).
    pub admin: TestServer,
    /// The gateway both are built from.
    pub gateway: Gateway,
    pub http: reqwest::Client,
}

/// How a test wants its stack.
pub struct StackBuilder {
    config: &'static str,
    app: fn(&Gateway) -> Result<App, ConfigError>,
    overrides: Vec<(String, String)>,
    mocks: MockConfig,
}

impl StackBuilder {
    pub fn new(config: &'static str, app: fn(&Gateway) -> Result<App, ConfigError>) -> Self {
        Self { config, app, overrides: Vec::new(), mocks: MockConfig::ephemeral() }
    }

    /// Runs `count` instances of `service`, listed as the upstream's URLs.
    pub fn instances(mut self, service: Service, count: usize) -> Self {
        self.mocks.instances.insert(service, count);
        self
    }

    /// Sets a config key (dotted path) after the mocks' addresses are filled in.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.to_owned(), value.to_owned()));
        self
    }

    pub async fn start(self) -> Stack {
        bff_core::install_crypto_provider();
        let mocks = services_mock::start(&self.mocks).await.expect("start mocks");
        let mut overrides = Overrides::default();
        for (key, value) in mocks.config_overrides() {
            overrides.set_existing(key, value, "mocks");
        }
        for (key, value) in self.overrides {
            overrides.set(key, value, "test");
        }
        let source = ConfigSource { name: "test config".into(), text: self.config.to_owned() };
        let config = load(&source, &overrides).expect("valid test config");
        let gateway = Gateway::builder(config).source("test config").build().await.expect("gateway builds");
        let server = Server::new(&gateway.config().server).metrics(gateway.metrics().clone());
        let bff = TestServer::serve(server, (self.app)(&gateway).expect("app builds")).await;
        // The BFF's own URLs, for a login at the mock provider (bff-web's sessions).
        let origin = bff.url("");
        mocks.idp().register_origin(services_mock::services::oidc::DEMO_CLIENT_ID, origin.trim_end_matches('/'));
        let admin = TestServer::start(gateway.admin_router()).await;
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        Stack { mocks, bff, admin, gateway, http }
    }
}

impl Stack {
    pub fn token(&self) -> String {
        self.mocks.token("42", "profile orders", 3600)
    }

    /// `GET path` on the BFF with the demo user's token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.bff.url(path)).bearer_auth(self.token()).send().await.expect("request")
    }

    /// `GET path` on the BFF with the demo user's token and `x-request-id: request_id`.
    pub async fn get_with_id(&self, path: &str, request_id: &str) -> reqwest::Response {
        let request = self.http.get(self.bff.url(path)).bearer_auth(self.token()).header("x-request-id", request_id);
        request.send().await.expect("request")
    }

    /// The body of `GET path` on the admin listener (`/metrics`).
    pub async fn admin_text(&self, path: &str) -> String {
        self.http.get(self.admin.url(path)).send().await.expect("admin request").text().await.expect("admin body")
    }

    pub async fn set_faults(&self, service: Service, faults: Faults) {
        self.mocks.service(service).faults.set(faults);
    }

    pub fn stats(&self, service: Service) -> StatsSnapshot {
        self.mocks.service(service).stats.snapshot()
    }

    pub fn reset_stats(&self) {
        for (_, running) in self.mocks.iter() {
            running.stats.reset();
        }
    }
}

pub fn latency(ms: u64) -> Faults {
    Faults { latency_ms: ms, ..Faults::default() }
}

/// Polls `check` until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + within;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tick.tick().await;
    }
}

/// A port on 127.0.0.1 that nothing listens on, for as long as the guard lives: bound but never
/// listening, so connecting is refused and no concurrent test can take the port.
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub async fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    ClosedPort { port, _socket: socket }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close` included) as written, so
/// the path reaches the server as it is (a client library would resolve `..` and `%2e%2e`
/// first), and returns the status and body of the answer.
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}
