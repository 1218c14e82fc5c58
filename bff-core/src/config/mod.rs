//! Typed configuration: `defaults` plus per-upstream and per-route sections, validated at start-up.
//!
//! Sources, later ones winning: the TOML file, then `BFF_*` environment variables (`__` separates
//! keys: `BFF_UPSTREAMS__USERS__URL`), then command-line flags. See [`load`].

// First: its `via_str!` serves the modules after it.
#[macro_use]
mod values;

mod limits;
mod load;
mod print;
mod proxy;
mod resilience;
mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use limits::QUOTA_POLICY;
pub use limits::{
    ConcurrencyLimitConfig, LimitKeyKind, OnRedisError, QuotaConfig, RateLimitConfig, RedisConfig, RedisUrl,
};
pub use load::{ConfigError, ConfigSource, Overrides, load};
pub use print::redacted;
pub use proxy::{HeaderEdits, ProxyRouteConfig, ProxyUpstream};
pub use resilience::{BreakerConfig, OutlierConfig, RetryConfig};
pub use session::{OidcConfig, Secret, SessionConfig, SessionStoreKind};
pub use values::{Header, HostPattern, HttpUrl, IpNet, JwtAlgorithm, KeyHash, Origin, UpstreamUrls};
pub(crate) use values::{MAX_INSTANCES, takes_suffix};

/// The whole configuration of one BFF process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Trace context: whose `traceparent` is continued, how many new traces are sampled.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Connection and request limits, and shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (`/metrics`, `/readyz`); absent means they are not served.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// HTTPS on `listen`; absent means plain HTTP (h2c and HTTP/1.1).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `Strict-Transport-Security` on the answers of a `tls` listener (on by default with it).
    #[serde(default)]
    pub hsts: HstsConfig,
    /// Values every upstream and route gets unless its own section says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// Named downstream services.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Per-route overrides, keyed by the route's path pattern (`"/mobile/orders/{id}"`).
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Bearer JWT verification; absent means no route can see an identity.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// API-key authentication (partners); exclusive with `auth`.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Response shaping layers.
    #[serde(default)]
    pub shaping: ShapingConfig,
    /// Cross-origin access for browsers; absent means no CORS headers.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Rate limits by name (`[rate_limits.per-user]`); see [`RateLimitConfig`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// Concurrency limits by name (`[concurrency_limits.uploads-per-user]`): requests of one
    /// key in flight at once; see [`ConcurrencyLimitConfig`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub concurrency_limits: BTreeMap<String, ConcurrencyLimitConfig>,
    /// Quotas per API-client tier (`[quotas.free]`): every client of `api_keys` needs its tier's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quotas: BTreeMap<String, QuotaConfig>,
    /// Shared counting of limits and quotas across replicas; absent: each process counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Passthrough routes (`[[proxy]]`), forwarded to an upstream without a handler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy: Vec<ProxyRouteConfig>,
    /// The OpenID Provider browser users sign in with; needed by `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
    /// Browser sessions (`/bff/login`, a cookie, CSRF checks); absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionConfig>,
}

/// TLS termination on `listen`: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3. The files are read
/// again on SIGHUP and when they change, without a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: std::path::PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// `Strict-Transport-Security` (RFC 6797) on every answer of a listener that serves TLS
/// (`[tls]`): a browser that has seen it goes to the host over HTTPS only, for `max_age`, whatever
/// `http://` link or typed address would take it there. Not sent for `localhost` or an address,
/// nor by a listener without `[tls]` (behind a proxy that terminates TLS, the proxy sends it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HstsConfig {
    /// Whether it is sent at all (with `[tls]`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long browsers keep to HTTPS (`max-age`, whole seconds); `0s` tells them to forget.
    #[serde(with = "humantime_serde", default = "default_hsts_max_age")]
    pub max_age: Duration,
    /// Whether every subdomain of the host is held to HTTPS too (`includeSubDomains`).
    #[serde(default)]
    pub include_subdomains: bool,
    /// Whether the host asks to be in browsers' built-in lists (`preload`): needs
    /// `include_subdomains` and a `max_age` of a year or more, and is hard to undo.
    #[serde(default)]
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        Self { enabled: true, max_age: default_hsts_max_age(), include_subdomains: false, preload: false }
    }
}

/// A year: the least the browsers' preload lists take, and what most guides advise.
fn default_hsts_max_age() -> Duration {
    Duration::from_secs(HSTS_YEAR_SECS)
}

const HSTS_YEAR_SECS: u64 = 365 * 24 * 60 * 60;

/// The admin listener: operators' endpoints, apart from client traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// The address to listen on; keep it where only operators and scrapers reach
    /// (`127.0.0.1:9081`, or a cluster-internal address).
    pub listen: SocketAddr,
}

/// How clients are served: what one client may hold or send, and how the process stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The longest a client may take to send a request's head: a new connection's first
    /// request (the TLS handshake, or HTTP/2's preface and first complete HEADERS, included)
    /// must start within it of the accept, and an HTTP/1.1 connection waits this long for the
    /// head of its next request.
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed this long after its last response,
    /// whatever else it sends (HTTP/2 PINGs and SETTINGS are not requests); one whose requests
    /// move nothing (a client that reads no answer) is closed after one to two such periods.
    /// Must be longer than every route's deadline.
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// The most client connections open at once; at it, the connection idle longest is closed
    /// to make room, and when every one is busy a new one is closed at once. Kept below three
    /// quarters of the process's open-file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most connections from one client address (an IPv6 address by its /64), so one client
    /// cannot take the whole cap; at it, that address's connection idle longest is closed to make
    /// room. Peers in `trusted_proxies` are not counted per address. Absent: a tenth of
    /// `max_connections` (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// The largest request head (request line and headers), in bytes; larger is a 431. At
    /// least 8 KiB is used. Also the HTTP/2 header list limit.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// The most headers in one HTTP/1.1 request; more is a 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// The longest request URI (path and query), in bytes; longer is a 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// The largest request body, in bytes, unless the route's `max_body_bytes` says otherwise;
    /// larger is a 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The most concurrent streams one HTTP/2 connection may open (each holds some state in the
    /// server whether or not its client reads the answer).
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// The most response bytes one HTTP/2 connection may leave unread (a client that opens
    /// streams and never takes their answers), each stream counting 16 KiB besides its body
    /// until its answer is taken; over it, its new streams are refused with `REFUSED_STREAM`
    /// (safe to send again) until it reads. The default lets 32 answers wait at once.
    #[serde(default = "default_h2_max_unsent_bytes")]
    pub h2_max_unsent_bytes: usize,
    /// The most bytes of one HTTP/2 stream's response waiting in the connection's send buffer.
    #[serde(default = "default_h2_max_send_buf_bytes")]
    pub h2_max_send_buf_bytes: usize,
    /// Load shedding: the most requests handled at once; one more is a `503 OVERLOADED` with
    /// `Retry-After`, at once (`/healthz` and the admin listener are never shed). Default
    /// 4,096; 0: no cap.
    #[serde(default = "default_max_in_flight_requests")]
    pub max_in_flight_requests: usize,
    /// The peers (load balancers, CDNs) whose `X-Forwarded-For` is believed, as networks
    /// (`10.0.0.0/8`) or addresses; from any other peer the header is ignored and the
    /// connection's address is the client's.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// The hosts the client listener serves (`bff.example.com`, `*.example.com`, `127.0.0.1`):
    /// a request naming any other host, or none, is a `421 HOST_NOT_ALLOWED`, before it is
    /// routed. It closes DNS rebinding (a page on another name, resolved to this BFF, reading
    /// its answers) and any answer built from the `Host` (the login's `redirect_uri`). Empty
    /// (the default): any host. The admin listener is not checked.
    #[serde(default)]
    pub allowed_hosts: Vec<HostPattern>,
    /// On SIGTERM, how long `/readyz` answers 503 while requests are still served, so load
    /// balancers stop sending traffic before the listener closes (Ctrl-C skips it).
    #[serde(with = "humantime_serde", default = "default_drain_delay")]
    pub drain_delay: Duration,
    /// Once the listener is closed, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde", default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// The content codings a JSON request body may be sent in besides none: with `["gzip"]`,
    /// a `Content-Encoding: gzip` body is decoded before a handler reads it, the route's body
    /// limit counting its decoded bytes (and its compressed ones). Empty (the default): a
    /// compressed body is a `415 UNSUPPORTED_CONTENT_ENCODING`. A passthrough route forwards a
    /// body as it came, coding and all, whatever this says.
    #[serde(default)]
    pub request_body_codings: Vec<RequestCoding>,
}

/// A content coding the gateway decodes in a JSON request body (`server.request_body_codings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RequestCoding {
    /// `gzip` (RFC 1952; `x-gzip` names it too).
    Gzip,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            max_body_bytes: default_max_body_bytes(),
            h2_max_concurrent_streams: default_h2_max_concurrent_streams(),
            h2_max_unsent_bytes: default_h2_max_unsent_bytes(),
            h2_max_send_buf_bytes: default_h2_max_send_buf_bytes(),
            max_in_flight_requests: default_max_in_flight_requests(),
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            drain_delay: default_drain_delay(),
            shutdown_grace: default_shutdown_grace(),
            request_body_codings: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// `max_connections_per_ip`, or its default: a tenth of `max_connections`, at least 1.
    pub(crate) fn connections_per_ip(&self) -> usize {
        self.max_connections_per_ip.unwrap_or(self.max_connections / 10).max(1)
    }
}

fn default_max_in_flight_requests() -> usize {
    4096
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_header_bytes() -> usize {
    16 * 1024
}

fn default_max_headers() -> usize {
    100
}

fn default_max_uri_bytes() -> usize {
    8 * 1024
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_h2_max_concurrent_streams() -> u32 {
    64
}

fn default_h2_max_unsent_bytes() -> usize {
    512 * 1024
}

fn default_h2_max_send_buf_bytes() -> usize {
    64 * 1024
}

fn default_drain_delay() -> Duration {
    Duration::from_secs(5)
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

/// Which response shaping layers are on (all off by default).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ShapingConfig {
    /// `?fields=a,b.c` sparse fieldsets on JSON responses.
    #[serde(default)]
    pub fields: bool,
    /// Weak ETags and `304 Not Modified` on `GET`.
    #[serde(default)]
    pub etag: bool,
    /// gzip and brotli, as the client's `Accept-Encoding` asks.
    #[serde(default)]
    pub compression: bool,
    /// Bodies smaller than this many bytes are sent uncompressed (nginx `gzip_min_length`, Envoy
    /// `min_content_length`): one that fits in a TCP segment either way saves the client nothing,
    /// while compressing it still costs CPU on every request (the bench's `mobile-home-gzip-forced`).
    #[serde(default = "default_compression_min_bytes")]
    pub compression_min_bytes: u64,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        Self { fields: false, etag: false, compression: false, compression_min_bytes: default_compression_min_bytes() }
    }
}

fn default_compression_min_bytes() -> u64 {
    1024
}

impl ShapingConfig {
    /// Whether any shaping is on.
    pub fn any(&self) -> bool {
        self.fields || self.etag || self.compression
    }
}

/// CORS for the origins a browser app is served from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CorsConfig {
    /// Exact origins allowed, e.g. `https://app.example.com` (no wildcard: credentials are allowed).
    pub allow_origins: Vec<Origin>,
    /// Whether cookies and `Authorization` may be sent.
    #[serde(default = "default_true")]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde", default = "default_cors_max_age")]
    pub max_age: Duration,
}

fn default_true() -> bool {
    true
}
fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

/// API keys, one per client, stored as SHA-256 hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiKeysConfig {
    /// The request header carrying the key.
    #[serde(default = "default_api_key_header")]
    pub header: Header,
    /// The clients, by name.
    pub clients: BTreeMap<String, ApiClientConfig>,
}

fn default_api_key_header() -> Header {
    Header(axum::http::HeaderName::from_static("x-api-key"))
}

/// One API client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiClientConfig {
    /// Its tier (`free`, `pro`, …), for quotas.
    pub tier: String,
    /// Hex SHA-256 of the key (`printf %s KEY | sha256sum`); never the key itself.
    pub key_sha256: KeyHash,
    /// The account whose data the client may read.
    pub account: String,
    /// The scopes it is granted (`profile`, `orders`, …).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// `pretty` for people, `json` for machines.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,bff_core=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::default(), filter: default_log_filter() }
    }
}

fn default_log_filter() -> String {
    "info".to_owned()
}

/// W3C Trace Context: every request belongs to a trace (its client's, when the client's
/// `traceparent` is valid and trusted, else a new one), and every upstream attempt carries it with
/// a span id of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TracingConfig {
    /// Whose `traceparent` is continued: `always` (the default), `never` (a public edge that does
    /// not let clients pick trace ids) or `trusted_proxies` (only from `server.trusted_proxies`).
    #[serde(default)]
    pub accept_parent: AcceptParent,
    /// The share of new traces marked sampled (`0.0` to `1.0`, default `1.0`); a continued
    /// trace keeps its parent's flag.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Where sampled spans are sent, over OTLP/HTTP (protobuf): a collector's base URL
    /// (`http://otel-collector:4318`, to which `/v1/traces` is added) or its full traces URL.
    /// None (the default): nothing is exported. `OTEL_EXPORTER_OTLP_ENDPOINT` sets it too.
    #[serde(default)]
    pub otlp_endpoint: Option<HttpUrl>,
    /// The collector's traces URL, used as it is (no path added); wins over `otlp_endpoint`.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` sets it too.
    #[serde(default)]
    pub otlp_traces_endpoint: Option<HttpUrl>,
    /// The `service.name` of the exported spans (default `bff`; `OTEL_SERVICE_NAME` sets it too).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Headers sent with each export (a collector's API key); never logged.
    #[serde(default)]
    pub headers: ExportHeaders,
    /// The most finished spans waiting for export (default 2048): when the collector falls behind,
    /// more are dropped and counted in `bff_trace_spans_dropped_total{reason="queue_full"}`.
    #[serde(default = "default_span_queue")]
    pub queue_size: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            accept_parent: AcceptParent::default(),
            sample_ratio: default_sample_ratio(),
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            service_name: None,
            headers: ExportHeaders::default(),
            queue_size: default_span_queue(),
        }
    }
}

fn default_span_queue() -> usize {
    2048
}

/// Headers of a span export request, by name; their values are secrets, left out of `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExportHeaders(pub BTreeMap<String, String>);

impl std::fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

fn default_sample_ratio() -> f64 {
    1.0
}

/// Whose `traceparent` a request's trace continues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AcceptParent {
    /// Any client's.
    #[default]
    Always,
    /// Nobody's: every request starts a trace.
    Never,
    /// Only a peer in `server.trusted_proxies`'s.
    TrustedProxies,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Defaults for every upstream and route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Defaults {
    /// The longest one upstream call may take (also bounded by what is left of the deadline).
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// The longest establishing a connection to an upstream may take.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// The budget of a whole request, fan-out included.
    #[serde(with = "humantime_serde", default = "default_deadline")]
    pub deadline: Duration,
    /// The most calls a homogeneous fan-out (`fanout_all`) runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Idle connections kept per upstream host (HTTP/1.1; HTTP/2 multiplexes over one).
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
    /// The most HTTP/1.1 connections open to each upstream instance at once; a call that finds
    /// none ready with the cap reached waits for one, first come first served, within its
    /// timeout. 0 (the default): no cap.
    #[serde(default)]
    pub pool_max_connections_per_host: usize,
    /// The HTTP version of upstream calls.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Retries of failed calls: 3 attempts in all by default, within a budget (`attempts = 1`
    /// turns them off).
    #[serde(default)]
    pub retry: RetryConfig,
    /// The bulkhead: the most calls in flight to one upstream (default 1,024); a call over it
    /// fails at once (`503 UPSTREAM_OVERLOADED`, or its optional part degrades) instead of
    /// queueing. 0: no cap.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The circuit breaker of every upstream: on by default (`enabled = false` turns it off).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Outlier ejection among an upstream's instances (when it has several).
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Identical GETs in flight at once (same path, headers and caller) share one call.
    #[serde(default)]
    pub coalesce: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            deadline: default_deadline(),
            concurrency: default_concurrency(),
            pool_max_idle_per_host: default_pool_max_idle(),
            pool_max_connections_per_host: 0,
            protocol: UpstreamProtocol::default(),
            retry: RetryConfig::default(),
            max_in_flight: default_max_in_flight(),
            breaker: BreakerConfig::default(),
            outlier: OutlierConfig::default(),
            coalesce: false,
        }
    }
}

fn default_max_in_flight() -> usize {
    1024
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_deadline() -> Duration {
    Duration::from_secs(2)
}
fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN)
}
fn default_pool_max_idle() -> usize {
    256
}

/// One named downstream service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// Base URL, e.g. `http://127.0.0.1:7001`, or the URLs of identical instances
    /// (`urls = ["http://10.0.0.1:7001", "http://10.0.0.2:7001"]`), balanced by the fewest
    /// calls in flight of two picked at random, with outlier ejection.
    #[serde(alias = "urls")]
    pub url: UpstreamUrls,
    /// Overrides `defaults.timeout`.
    #[serde(with = "humantime_serde", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Overrides `defaults.connect_timeout`.
    #[serde(with = "humantime_serde", default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Overrides `defaults.protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// Overrides `defaults.retry`, as a whole section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Overrides `defaults.max_in_flight` (0: no cap for this upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Overrides `defaults.breaker`, as a whole section (`enabled = false`: none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Overrides `defaults.outlier`, as a whole section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierConfig>,
    /// Overrides `defaults.coalesce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<bool>,
    /// A response cache of at most this many bytes for this upstream's GETs, honouring its
    /// `Cache-Control` (absent or 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes: Option<u64>,
    /// Hedging: a GET not answered after this is sent a second time (to another instance when
    /// there are several), paid from the retry budget; the first good answer wins.
    #[serde(with = "humantime_serde", default, skip_serializing_if = "Option::is_none")]
    pub hedge_after: Option<Duration>,
    /// TLS to an `https://` upstream: a CA of its own, a client certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

/// How calls to one upstream speak TLS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates to trust for this upstream, instead of the platform's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// A PEM client certificate chain to present (mutual TLS); needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// The PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

/// The HTTP version calls to an upstream use.
///
/// HTTP/2 carries every concurrent call to an upstream over one connection, so one socket read
/// brings in the answers of many calls: fewer system calls and less CPU per request. It needs an
/// upstream that speaks it: over `http://` without negotiation ("prior knowledge", h2c), over
/// `https://` by ALPN.
///
/// It pays off when the BFF is busy on CPU, not when it mostly waits: hyper's HTTP/2 client hands
/// each call between more tasks (caller, client task, connection task, a task per stream), and
/// each hand-off between runtime workers is a thread wake-up, which shows as a higher p50 at
/// latency-bound load. The README's Performance section has the measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over a pool of connections, one call per connection at a time. Every server
    /// speaks it.
    #[default]
    Http1,
    /// HTTP/2 only: h2c with prior knowledge for `http://`, ALPN `h2` for `https://`. A call the
    /// server turns away unprocessed (`REFUSED_STREAM`, or past a `GOAWAY`) is sent again, twice
    /// at most; calls past the server's stream limit wait for a stream. The connection is pinged
    /// every 10 s, busy or idle; one that does not answer within 5 s is replaced.
    Http2,
    /// `https://`: offer `h2` and `http/1.1` by ALPN and use the server's pick; `http://`: HTTP/1.1.
    Auto,
}

/// Per-route overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// Overrides `defaults.deadline` for this route.
    #[serde(with = "humantime_serde", default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// Overrides `server.max_body_bytes` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

/// Bearer JWT verification against a JWKS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Where the signing keys are published.
    pub jwks_url: HttpUrl,
    /// Required `iss` claim, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim (one of), if set.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Accepted signature algorithms; only asymmetric ones are allowed.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde", default = "default_leeway")]
    pub leeway: Duration,
    /// The shortest interval between two JWKS fetches caused by an unknown `kid`.
    #[serde(with = "humantime_serde", default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Duration,
    /// How many bytes of verified tokens to remember (0 turns the cache off), each weighed by
    /// its length and its claims. A client sends the same token for its whole lifetime;
    /// re-checking its signature on every request is the largest per-request cost of a BFF.
    #[serde(default = "default_token_cache_bytes")]
    pub token_cache_bytes: u64,
    /// The longest bearer token accepted, in bytes; a longer one is refused unread.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// The JOSE `typ` a token must carry, if set: `at+jwt` for RFC 9068 access tokens, so an ID
    /// token of the same issuer is not taken for one.
    #[serde(default)]
    pub typ: Option<String>,
    /// The longest a verified token is remembered (never past its `exp`).
    #[serde(with = "humantime_serde", default = "default_token_cache_ttl")]
    pub token_cache_ttl: Duration,
}

impl AuthConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.algorithms.is_empty() {
            return Err(("auth.algorithms".into(), "name at least one algorithm".into()));
        }
        // An empty value would be required of every token as it is, so that no real token passes.
        if self.issuer.as_deref().is_some_and(|issuer| issuer.trim().is_empty()) {
            return Err(("auth.issuer".into(), "empty: name the tokens' `iss`, or leave the key out".into()));
        }
        if let Some(at) = self.audience.iter().position(|audience| audience.trim().is_empty()) {
            return Err((format!("auth.audience[{at}]"), "empty: name an `aud` the tokens carry".into()));
        }
        if self.typ.as_deref().is_some_and(|typ| typ.trim().is_empty()) {
            return Err(("auth.typ".into(), "empty: name the tokens' `typ` (`at+jwt`), or leave the key out".into()));
        }
        if self.max_token_bytes == 0 {
            return Err(("auth.max_token_bytes".into(), "must be greater than zero".into()));
        }
        Ok(())
    }

    /// Verification of an OpenID Provider's ID tokens: its keys, its issuer, this client as the
    /// audience; none remembered (each is verified once, at login).
    pub(crate) fn for_id_tokens(jwks_url: HttpUrl, issuer: &str, client_id: &str) -> Self {
        Self {
            jwks_url,
            issuer: Some(issuer.to_owned()),
            audience: vec![client_id.to_owned()],
            algorithms: default_algorithms(),
            leeway: default_leeway(),
            jwks_min_refresh: default_jwks_min_refresh(),
            token_cache_bytes: 0,
            max_token_bytes: default_max_token_bytes(),
            typ: None,
            token_cache_ttl: default_token_cache_ttl(),
        }
    }
}

fn default_token_cache_bytes() -> u64 {
    32 * 1024 * 1024
}

fn default_max_token_bytes() -> usize {
    8 * 1024
}
fn default_token_cache_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Checks what types alone cannot, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let positive = |key: String, d: Duration| {
            if d.is_zero() { Err((key, "must be greater than zero".to_owned())) } else { Ok(()) }
        };
        positive("defaults.timeout".into(), self.defaults.timeout)?;
        positive("defaults.connect_timeout".into(), self.defaults.connect_timeout)?;
        positive("defaults.deadline".into(), self.defaults.deadline)?;
        self.validate_resilience()?;
        for (name, upstream) in &self.upstreams {
            if let Some(t) = upstream.timeout {
                positive(format!("upstreams.{name}.timeout"), t)?;
            }
            if let Some(t) = upstream.connect_timeout {
                positive(format!("upstreams.{name}.connect_timeout"), t)?;
            }
            if let Some(t) = upstream.hedge_after {
                positive(format!("upstreams.{name}.hedge_after"), t)?;
            }
        }
        for (pattern, route) in &self.routes {
            if !pattern.starts_with('/') {
                return Err((format!("routes.\"{pattern}\""), "a route pattern starts with `/`".to_owned()));
            }
            if let Some(d) = route.deadline {
                positive(format!("routes.\"{pattern}\".deadline"), d)?;
            }
        }
        self.validate_server()?;
        if self.hsts.preload && !(self.hsts.include_subdomains && self.hsts.max_age.as_secs() >= HSTS_YEAR_SECS) {
            let why = "`preload` needs `include_subdomains = true` and a `max_age` of a year (`365d`) or more";
            return Err(("hsts.preload".into(), why.into()));
        }
        self.validate_limits()?;
        let ratio = self.tracing.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(("tracing.sample_ratio".into(), format!("{ratio} is not between 0.0 and 1.0")));
        }
        self.validate_export()?;
        if self.tracing.accept_parent == AcceptParent::TrustedProxies && self.server.trusted_proxies.is_empty() {
            return Err((
                "tracing.accept_parent".into(),
                "`trusted_proxies` needs `server.trusted_proxies`: name the proxies whose trace is continued".into(),
            ));
        }
        if self.auth.is_some() && self.api_keys.is_some() {
            return Err(("api_keys".into(), "a BFF authenticates with `auth` (JWT) or `api_keys`, not both".into()));
        }
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.validate_session()
    }

    fn validate_session(&self) -> Result<(), (String, String)> {
        match (&self.session, &self.oidc) {
            (Some(_), None) => {
                return Err(("session".into(), "sessions sign users in with `[oidc]`, which is not configured".into()));
            }
            (None, Some(_)) => {
                return Err(("oidc".into(), "`[oidc]` is used by `[session]`, which is not configured".into()));
            }
            _ => {}
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        if let Some(session) = &self.session {
            session.validate()?;
            if session.store == SessionStoreKind::Redis && self.redis.is_none() {
                return Err(("session.store".into(), "`redis` needs `redis.url`, which is not configured".into()));
            }
            if self.api_keys.is_some() {
                return Err(("session".into(), "browser sessions are for users: not with `api_keys`".into()));
            }
        }
        Ok(())
    }

    fn validate_resilience(&self) -> Result<(), (String, String)> {
        let defaults = &self.defaults;
        defaults.retry.validate("defaults.retry")?;
        defaults.outlier.validate("defaults.outlier")?;
        {
            defaults.breaker.validate("defaults.breaker")?;
        }
        for (name, upstream) in &self.upstreams {
            if let Some(retry) = &upstream.retry {
                retry.validate(&format!("upstreams.{name}.retry"))?;
            }
            if let Some(breaker) = &upstream.breaker {
                breaker.validate(&format!("upstreams.{name}.breaker"))?;
            }
            if let Some(outlier) = &upstream.outlier {
                outlier.validate(&format!("upstreams.{name}.outlier"))?;
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), (String, String)> {
        for (name, limit) in &self.rate_limits {
            let key = format!("rate_limits.{name}");
            limits::check_limit_name(name).map_err(|message| (key.clone(), message))?;
            limit.validate(&key)?;
            self.check_limit_key(&key, &limit.key)?;
        }
        for (name, limit) in &self.concurrency_limits {
            let key = format!("concurrency_limits.{name}");
            limits::check_limit_name(name).map_err(|message| (key.clone(), message))?;
            if self.rate_limits.contains_key(name) {
                let message = format!("`rate_limits.{name}` has this name too: limits are told apart by name");
                return Err((key, message));
            }
            limit.validate(&key)?;
            self.check_limit_key(&key, &limit.key)?;
        }
        for (tier, quota) in &self.quotas {
            quota.validate(&format!("quotas.{tier}"))?;
        }
        if !self.quotas.is_empty() {
            let Some(keys) = &self.api_keys else {
                return Err((
                    "quotas".into(),
                    "quotas are per API-client tier, and `api_keys` is not configured".into(),
                ));
            };
            for (name, client) in &keys.clients {
                if !self.quotas.contains_key(&client.tier) {
                    let message = format!("the tier `{}` has no quota: add `[quotas.{}]`", client.tier, client.tier);
                    return Err((format!("api_keys.clients.{name}.tier"), message));
                }
            }
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        Ok(())
    }

    /// The limit at `key` counts by something this BFF knows.
    fn check_limit_key(&self, key: &str, kind: &LimitKeyKind) -> Result<(), (String, String)> {
        let needs = match kind {
            LimitKeyKind::User if self.auth.is_none() && self.session.is_none() => "`auth` (JWT) or `session`",
            LimitKeyKind::Claim(_) if self.auth.is_none() => "`auth` (JWT)",
            LimitKeyKind::Client | LimitKeyKind::Account if self.api_keys.is_none() => "`api_keys`",
            _ => return Ok(()),
        };
        Err((format!("{key}.key"), format!("`{kind}` needs {needs}, which this BFF does not have")))
    }

    fn validate_export(&self) -> Result<(), (String, String)> {
        let tracing = &self.tracing;
        let endpoints =
            [("otlp_endpoint", &tracing.otlp_endpoint), ("otlp_traces_endpoint", &tracing.otlp_traces_endpoint)];
        for (key, endpoint) in endpoints {
            if let Some(endpoint) = endpoint
                && (!endpoint.username().is_empty() || endpoint.password().is_some())
            {
                let message = "credentials in the URL would be logged: send them in `tracing.headers`";
                return Err((format!("tracing.{key}"), message.into()));
            }
        }
        if let Some(name) = &tracing.service_name
            && (name.is_empty() || name.len() > 255 || name.chars().any(char::is_control))
        {
            return Err(("tracing.service_name".into(), "1 to 255 printable characters".into()));
        }
        if !(1..=1_000_000).contains(&tracing.queue_size) {
            let message = format!("{} is not between 1 and 1000000 spans", tracing.queue_size);
            return Err(("tracing.queue_size".into(), message));
        }
        for (name, value) in &tracing.headers.0 {
            let key = format!("tracing.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((key, "not a valid header name".into()));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err((key, "not a valid header value (visible ASCII only)".into()));
            }
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), (String, String)> {
        let server = &self.server;
        let nonzero = |key: &str, zero: bool| {
            if zero { Err((format!("server.{key}"), "must be greater than zero".to_owned())) } else { Ok(()) }
        };
        nonzero("header_read_timeout", server.header_read_timeout.is_zero())?;
        nonzero("idle_timeout", server.idle_timeout.is_zero())?;
        nonzero("shutdown_grace", server.shutdown_grace.is_zero())?;
        nonzero("max_connections", server.max_connections == 0)?;
        nonzero("max_header_bytes", server.max_header_bytes == 0)?;
        nonzero("max_headers", server.max_headers == 0)?;
        nonzero("max_uri_bytes", server.max_uri_bytes == 0)?;
        nonzero("h2_max_concurrent_streams", server.h2_max_concurrent_streams == 0)?;
        nonzero("max_connections_per_ip", server.max_connections_per_ip == Some(0))?;
        nonzero("h2_max_unsent_bytes", server.h2_max_unsent_bytes == 0)?;
        nonzero("h2_max_send_buf_bytes", server.h2_max_send_buf_bytes == 0)?;
        // A request may go quiet while its handler waits on upstreams; the idle timer must not
        // close its connection first.
        let deadlines = self.routes.values().filter_map(|r| r.deadline);
        let timeouts = self.proxy.iter().filter_map(|p| p.timeout);
        let longest = deadlines.chain(timeouts).chain([self.defaults.deadline]).max();
        if let Some(longest) = longest
            && server.idle_timeout <= longest
        {
            let message = format!("must be longer than the longest deadline ({})", humantime::format_duration(longest));
            return Err(("server.idle_timeout".to_owned(), message));
        }
        Ok(())
    }
}
