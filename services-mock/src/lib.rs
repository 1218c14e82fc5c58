//! The downstream services a BFF fans out to, with deterministic data and fault injection.
//!
//! Each service listens on its own address. Besides its business routes, every listener answers
//! `GET|DELETE /_stats` and `GET|PUT|DELETE /_faults` (formats fixed in `design.md`). Tests start
//! the whole set in-process on ephemeral ports with [`start`] and [`MockConfig::ephemeral`].

pub mod data;
pub mod faults;
mod server;
pub mod services;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use faults::{FaultState, Faults};
pub use services::auth::Keys;
pub use services::oidc::Idp;
pub use stats::{Stats, StatsSnapshot};

/// One of the mock services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Issues JWTs and publishes the JWKS.
    Auth,
    /// User profiles.
    Users,
    /// Orders per user.
    Orders,
    /// Notifications and unread counts.
    Notifications,
    /// Products.
    Catalog,
    /// Stock levels.
    Inventory,
    /// Product reviews.
    Reviews,
}

impl Service {
    /// Every service, in port order.
    pub const ALL: [Service; 7] = [
        Service::Auth,
        Service::Users,
        Service::Orders,
        Service::Notifications,
        Service::Catalog,
        Service::Inventory,
        Service::Reviews,
    ];

    /// The service's name, as used in flags, config and upstream names.
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Notifications => "notifications",
            Service::Catalog => "catalog",
            Service::Inventory => "inventory",
            Service::Reviews => "reviews",
        }
    }

    /// The fixed default port (design.md): auth 7000 through reviews 7006.
    pub fn default_port(self) -> u16 {
        7000 + Service::ALL.iter().position(|s| *s == self).unwrap_or(0) as u16
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL.into_iter().find(|svc| svc.name() == s).ok_or_else(|| {
            let names: Vec<_> = Service::ALL.iter().map(|s| s.name()).collect();
            format!("unknown service `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// Where the services listen and which faults they start with.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The IP every service binds to.
    pub listen: IpAddr,
    /// The port of each service; a missing entry means the default port, 0 means any free port.
    pub ports: BTreeMap<Service, u16>,
    /// Faults in force from the start.
    pub faults: BTreeMap<Service, Faults>,
    /// The services to start; empty means all.
    pub only: Vec<Service>,
    /// How many identical listeners a service has (1 when absent): each with its own faults and
    /// stats. The k-th extra one listens on the service's port + 100·k (or a free port when the
    /// service's port is 0).
    pub instances: BTreeMap<Service, usize>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: BTreeMap::new(),
            faults: BTreeMap::new(),
            only: Vec::new(),
            instances: BTreeMap::new(),
        }
    }
}

impl MockConfig {
    /// Every service on 127.0.0.1 with an ephemeral port: what tests and `--demo` use.
    pub fn ephemeral() -> Self {
        Self { ports: Service::ALL.iter().map(|s| (*s, 0)).collect(), ..Self::default() }
    }

    /// The port of `service`'s instance number `k` (0 for the first).
    fn port(&self, service: Service, k: usize) -> u16 {
        match self.ports.get(&service).copied().unwrap_or_else(|| service.default_port()) {
            0 => 0,
            port => port.saturating_add(100 * k as u16),
        }
    }

    /// The most listeners one service may have.
    pub const MAX_INSTANCES: usize = 16;
}

/// One running service.
#[derive(Debug)]
pub struct RunningService {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// Its faults, to change at run time.
    pub faults: FaultState,
    /// Its counters.
    pub stats: Stats,
    task: JoinHandle<()>,
}

/// The running mock services; dropping this stops them.
#[derive(Debug)]
pub struct MockServices {
    /// Each started service's listeners (one unless `instances` asked for more).
    services: BTreeMap<Service, Vec<RunningService>>,
    keys: Arc<Keys>,
    idp: Arc<Idp>,
}

impl MockServices {
    /// The running service (its first instance), if it was started.
    pub fn get(&self, service: Service) -> Option<&RunningService> {
        self.services.get(&service).and_then(|all| all.first())
    }

    /// The base URL of a service (`http://127.0.0.1:port`, its first instance); panics if it was
    /// not started.
    pub fn url(&self, service: Service) -> String {
        format!("http://{}", self.service(service).addr)
    }

    /// A started service (its first instance); panics if `service` was left out with `only` (a
    /// test setup bug).
    pub fn service(&self, service: Service) -> &RunningService {
        self.get(service).unwrap_or_else(|| panic!("mock service {service} was not started"))
    }

    /// Every instance of a started service; empty if it was not started.
    pub fn instances(&self, service: Service) -> &[RunningService] {
        self.services.get(&service).map_or(&[], Vec::as_slice)
    }

    /// Every started service, with its first instance.
    pub fn iter(&self) -> impl Iterator<Item = (Service, &RunningService)> {
        self.services.iter().filter_map(|(s, all)| Some((*s, all.first()?)))
    }

    /// The OpenID Provider auth runs: register a BFF's origin, shorten token lifetimes, revoke.
    pub fn idp(&self) -> &Idp {
        &self.idp
    }

    /// Signs a token as `POST /token` would, without a round trip.
    /// `claims` signed with the demo RS256 key, as the auth service signs its tokens.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.keys.sign(jsonwebtoken::Algorithm::RS256, claims).unwrap_or_else(|e| panic!("demo key cannot sign: {e}"))
    }

    pub fn token(&self, sub: &str, scope: &str, ttl_s: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let claims = serde_json::json!({
            "iss": services::auth::ISSUER,
            "aud": services::auth::AUDIENCE,
            "sub": sub,
            "scope": scope,
            "iat": now,
            "exp": now + ttl_s,
        });
        self.keys.sign(jsonwebtoken::Algorithm::RS256, &claims).unwrap_or_else(|e| panic!("demo key cannot sign: {e}"))
    }
}

impl Drop for MockServices {
    fn drop(&mut self) {
        for running in self.services.values().flatten() {
            running.task.abort();
        }
    }
}

/// Errors starting the mock services.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind {service} on {addr}: {source}")]
    Bind {
        /// The service.
        service: Service,
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The demo keys could not be loaded.
    #[error("cannot load the demo signing keys: {0}")]
    Keys(#[from] jsonwebtoken::errors::Error),
}

/// Binds every configured service and serves it in the background.
pub async fn start(config: &MockConfig) -> Result<MockServices, StartError> {
    let keys = Arc::new(Keys::demo()?);
    let idp = Arc::new(Idp::new(keys.clone()));
    let mut services = BTreeMap::new();
    for service in Service::ALL {
        if !config.only.is_empty() && !config.only.contains(&service) {
            continue;
        }
        let count = config.instances.get(&service).copied().unwrap_or(1).clamp(1, MockConfig::MAX_INSTANCES);
        let mut instances = Vec::with_capacity(count);
        for k in 0..count {
            let addr = SocketAddr::new(config.listen, config.port(service, k));
            let listener =
                TcpListener::bind(addr).await.map_err(|source| StartError::Bind { service, addr, source })?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind { service, addr, source })?;
            let faults = FaultState::new(config.faults.get(&service).cloned().unwrap_or_default());
            let stats = Stats::default();
            let router = service_router(service, &idp, faults.clone(), stats.clone());
            let task = tokio::spawn(server::serve(listener, router, stats.clone()));
            tracing::info!(%service, %addr, "mock service listening");
            instances.push(RunningService { addr, faults, stats, task });
        }
        services.insert(service, instances);
    }
    Ok(MockServices { services, keys, idp })
}

/// The full router of one service: its business routes behind stats and faults, plus the admin routes.
pub fn service_router(service: Service, idp: &Arc<Idp>, faults: FaultState, stats: Stats) -> Router {
    let business = match service {
        Service::Auth => services::auth::router(idp.clone()),
        Service::Users => services::users(),
        Service::Orders => services::orders(),
        Service::Notifications => services::notifications(),
        Service::Catalog => services::catalog(),
        Service::Inventory => services::inventory(),
        Service::Reviews => services::reviews(),
    };
    let business = business
        .layer(from_fn_with_state(faults.clone(), faults::inject))
        .layer(from_fn_with_state(stats.clone(), stats::track));
    let admin =
        Router::new().route("/_stats", get(stats::stats_get).delete(stats::stats_delete)).with_state(stats).merge(
            Router::new()
                .route("/_faults", get(faults::faults_get).put(faults::faults_put).delete(faults::faults_delete))
                .with_state(faults),
        );
    business.merge(admin).route("/v1/traces", axum::routing::post(otlp_sink))
}

/// `POST /v1/traces`: an OTLP/HTTP traces endpoint that takes every export and keeps nothing (an
/// empty body is an empty `ExportTraceServiceResponse`), so a BFF can export spans in the demo
/// and the benchmarks without a collector.
async fn otlp_sink(_spans: axum::body::Bytes) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], axum::body::Bytes::new())
}

// === demo ===

impl MockServices {
    /// Config overrides (dotted keys) that point a BFF's upstreams, JWKS and OpenID Provider at
    /// these services: a service with several instances as a list of URLs.
    pub fn config_overrides(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .filter_map(|(service, all)| {
                let first = all.first()?;
                Some(match (service, all.len()) {
                    (Service::Auth, _) => {
                        ("auth.jwks_url".to_owned(), format!("http://{}/.well-known/jwks.json", first.addr))
                    }
                    (other, 1) => (format!("upstreams.{other}.url"), format!("http://{}", first.addr)),
                    (other, _) => {
                        let urls: Vec<String> = all.iter().map(|r| format!("\"http://{}\"", r.addr)).collect();
                        (format!("upstreams.{other}.url"), format!("[{}]", urls.join(", ")))
                    }
                })
            })
            .chain(self.get(Service::Auth).into_iter().flat_map(|auth| {
                // The OpenID Provider, for a BFF with `[oidc]`, with the demo client's secret.
                [
                    ("oidc.issuer".to_owned(), format!("http://{}", auth.addr)),
                    ("oidc.client_secret".to_owned(), services::oidc::DEMO_CLIENT_SECRET.to_owned()),
                ]
            }))
            .collect()
    }
}
