//! Named downstream services and typed calls to them.
//!
//! An [`Upstream`] owns a pooled HTTP client under a stack of outbound layers, built once from
//! config; `upstream/stack.rs` lists them in order. A [`Call`] describes one request of any method; it runs
//! inside a fan-out (`Ctx::fanout`), which supplies the deadline and the request id, and its
//! output type says what it yields ([`Decode`]): JSON, a [`Reply`] of any status, or a
//! [`Streamed`] response.

mod abandon;
mod attempt;
mod balance;
mod body;
mod breaker;
mod budget;
mod bulkhead;
mod cache;
mod call;
mod coalesce;
mod error;
mod headers;
mod hedge;
mod journal;
pub use headers::DEADLINE_MS;
pub(crate) use journal::{AttemptLog, Attempts};
mod metrics;
mod outgoing;
mod retry;
mod snapshot;
mod stack;
#[cfg(test)]
mod switchable;
mod timeout;
mod tls;
mod transport;
mod unprocessed;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use attempt::Attempt;
pub(crate) use attempt::AttemptLayers;
pub use body::Body;
pub(crate) use call::is_dot_name;
pub use call::{Call, Decode, Reply, Streamed};
pub use error::{UpstreamError, UpstreamErrorKind};
pub(crate) use outgoing::CallContext;
pub(crate) use stack::Outbound;

use crate::config::{
    BreakerConfig, Config, Defaults, HttpUrl, OutlierConfig, RetryConfig, UpstreamConfig, UpstreamProtocol,
    UpstreamUrls,
};
use crate::observe::metrics::Metrics;

/// The error type inside the outbound stack (tower's convention); calls classify it into an
/// [`UpstreamError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How an [`Upstream`] connects, and how long one attempt may take.
///
/// Start from [`UpstreamSettings::default`] (the config defaults) and set what differs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamSettings {
    /// The longest one attempt may take (the request deadline bounds the whole call).
    pub timeout: Duration,
    /// The longest establishing a connection may take.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections kept.
    pub pool_max_idle: usize,
    /// The most HTTP/1.1 connections open at once (to each instance); over it a call waits for
    /// one within its timeout. `None`: no cap.
    pub pool_max_connections: Option<NonZeroUsize>,
    /// The HTTP version of calls.
    pub protocol: UpstreamProtocol,
    /// The TLS client settings for `https://`; `None` trusts the platform's roots and presents
    /// no certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The bulkhead: the most calls in flight; over it a call fails at once. `None`: no cap.
    pub max_in_flight: Option<NonZeroUsize>,
    /// Retries of failed calls.
    pub retry: RetryConfig,
    /// The circuit breaker; `None` (or turned off): none.
    pub breaker: Option<BreakerConfig>,
    /// Outlier ejection, when there are several instances.
    pub outlier: OutlierConfig,
    /// Whether identical GETs in flight at once share one call.
    pub coalesce: bool,
    /// The response cache's size in bytes; `None`: no cache.
    pub cache_bytes: Option<u64>,
    /// Hedging: a GET not answered after this is sent again; `None`: never.
    pub hedge_after: Option<Duration>,
}

impl UpstreamSettings {
    /// One upstream's section with `defaults` filled in where it is silent.
    pub(crate) fn from_config(defaults: &Defaults, upstream: &UpstreamConfig) -> Self {
        Self {
            timeout: upstream.timeout.unwrap_or(defaults.timeout),
            connect_timeout: upstream.connect_timeout.unwrap_or(defaults.connect_timeout),
            pool_max_idle: defaults.pool_max_idle_per_host,
            pool_max_connections: NonZeroUsize::new(defaults.pool_max_connections_per_host),
            protocol: upstream.protocol.unwrap_or(defaults.protocol),
            tls: None,
            max_in_flight: NonZeroUsize::new(upstream.max_in_flight.unwrap_or(defaults.max_in_flight)),
            retry: upstream.retry.clone().unwrap_or_else(|| defaults.retry.clone()),
            breaker: Some(upstream.breaker.as_ref().unwrap_or(&defaults.breaker)).filter(|b| b.enabled).cloned(),
            outlier: upstream.outlier.clone().unwrap_or_else(|| defaults.outlier.clone()),
            coalesce: upstream.coalesce.unwrap_or(defaults.coalesce),
            cache_bytes: upstream.cache_bytes.filter(|bytes| *bytes > 0),
            hedge_after: upstream.hedge_after,
        }
    }

    /// Every resilience layer off (no retries, breaker or bulkhead): for a client with a policy
    /// of its own (the JWKS fetch), and for tests that turn on the one layer they test.
    pub(crate) fn bare() -> Self {
        Self {
            max_in_flight: None,
            retry: RetryConfig { attempts: 1, ..RetryConfig::default() },
            breaker: None,
            ..Self::default()
        }
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        let d = Defaults::default();
        Self {
            timeout: d.timeout,
            connect_timeout: d.connect_timeout,
            pool_max_idle: d.pool_max_idle_per_host,
            pool_max_connections: NonZeroUsize::new(d.pool_max_connections_per_host),
            protocol: d.protocol,
            tls: None,
            max_in_flight: NonZeroUsize::new(d.max_in_flight),
            retry: d.retry,
            breaker: Some(d.breaker).filter(|b| b.enabled),
            outlier: d.outlier,
            coalesce: d.coalesce,
            cache_bytes: None,
            hedge_after: None,
        }
    }
}

/// A named downstream service. Cheap to clone (one reference count); clones share the
/// connection pool.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    name: Arc<str>,
    stack: Outbound,
    metrics: metrics::UpstreamMetrics,
    abandoned: abandon::Abandoned,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds an upstream at `base` (an `http` or `https` URL) with its own connection pool,
    /// recording into `metrics`. A BFF gets its upstreams from the gateway
    /// ([`Gateway::upstream`](crate::Gateway::upstream)), so that each is named in the config
    /// and has its policies, metrics and reloads; a test double is [`Upstream::from_service`].
    pub(crate) fn new(name: &str, base: &HttpUrl, settings: UpstreamSettings, metrics: &Metrics) -> Self {
        Self::instances(name, std::slice::from_ref(base), settings, metrics)
    }

    /// An upstream with several identical instances at `bases` (each with its own connection
    /// pool), balanced with outlier ejection (`upstream/balance.rs`).
    pub(crate) fn instances(name: &str, bases: &[HttpUrl], settings: UpstreamSettings, metrics: &Metrics) -> Self {
        Self::instances_with(name, bases, settings, metrics, &AttemptLayers::default())
    }

    /// As [`Upstream::instances`], each attempt inside the layers added for `name`.
    fn instances_with(
        name: &str,
        bases: &[HttpUrl],
        settings: UpstreamSettings,
        metrics: &Metrics,
        layers: &AttemptLayers,
    ) -> Self {
        let name: Arc<str> = Arc::from(name);
        let clients: Vec<(String, transport::HttpTransport)> = bases
            .iter()
            .map(|base| (base.to_string(), transport::HttpTransport::new(name.clone(), base, &settings)))
            .collect();
        let stack = if layers.has(&name) {
            let wrapped = clients.into_iter().map(|(url, client)| (url, layers.wrap(&name, client))).collect();
            stack::build(&name, &settings, wrapped, metrics)
        } else {
            stack::build(&name, &settings, clients, metrics)
        };
        Self::with_stack(name.clone(), &settings, stack, metrics)
    }

    /// An upstream whose innermost step is `service` instead of an HTTP client (an in-memory
    /// fake in tests and benchmarks), under the same stack as a real one.
    pub fn from_service<S, E>(name: &str, settings: UpstreamSettings, service: S, metrics: &Metrics) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Self::from_services(name, settings, vec![service], metrics)
    }

    /// As [`Upstream::from_service`], with one service per instance.
    pub fn from_services<S, E>(name: &str, settings: UpstreamSettings, services: Vec<S>, metrics: &Metrics) -> Self
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = E> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let name: Arc<str> = Arc::from(name);
        let clients = services
            .into_iter()
            .enumerate()
            .map(|(i, service)| (format!("instance-{i}"), tower::ServiceExt::map_err(service, Into::into)))
            .collect();
        Self::with_stack(name.clone(), &settings, stack::build(&name, &settings, clients, metrics), metrics)
    }

    fn with_stack(name: Arc<str>, settings: &UpstreamSettings, stack: Outbound, registry: &Metrics) -> Self {
        let metrics = metrics::UpstreamMetrics::new(&name, registry);
        let abandoned = abandon::Abandoned::new(&name, settings.protocol, registry);
        Self { inner: Arc::new(UpstreamInner { name, stack, metrics, abandoned }) }
    }

    /// The upstream's name, as in config and in errors.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A `GET` of `path` (with query; encode caller input with [`encode`]) decoded as `T`.
    pub fn get<T>(&self, path: impl Into<String>) -> Call<T> {
        self.request(Method::GET, path)
    }

    /// A `POST` of `path`; add a body with [`Call::json`].
    pub fn post<T>(&self, path: impl Into<String>) -> Call<T> {
        self.request(Method::POST, path)
    }

    /// A `PUT` of `path`.
    pub fn put<T>(&self, path: impl Into<String>) -> Call<T> {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` of `path`.
    pub fn patch<T>(&self, path: impl Into<String>) -> Call<T> {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` of `path`.
    pub fn delete<T>(&self, path: impl Into<String>) -> Call<T> {
        self.request(Method::DELETE, path)
    }

    /// A call of any `method` to `path`.
    pub fn request<T>(&self, method: Method, path: impl Into<String>) -> Call<T> {
        Call::new(self.clone(), method, path.into())
    }

    /// Counts an optional part of this upstream left out of an answer.
    pub(crate) fn count_degraded(&self) {
        self.inner.metrics.degraded.increment(1);
    }
}

/// Every upstream named in the configuration, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upstreams {
    by_name: Arc<BTreeMap<String, (Upstream, UpstreamUrls)>>,
}

impl Upstreams {
    /// Builds a client per upstream section, merging `defaults` explicitly.
    ///
    /// Fails with the config key at fault and why when an upstream's TLS files cannot be used.
    #[cfg(test)]
    pub(crate) fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, (String, String)> {
        Self::with_layers(config, metrics, &AttemptLayers::default(), |_| None)
    }

    /// As [`Upstreams::from_config`], each upstream's attempts inside the layers added for it,
    /// and each upstream `kept` gives (a reload's unchanged one) taken as it is.
    pub(crate) fn with_layers(
        config: &Config,
        metrics: &Metrics,
        layers: &AttemptLayers,
        kept: impl Fn(&str) -> Option<Upstream>,
    ) -> Result<Self, (String, String)> {
        if let Some(unknown) = layers.upstreams().find(|name| !config.upstreams.contains_key(*name)) {
            let message =
                "a layer is added for this upstream (`GatewayBuilder::upstream_layer`), but it is not configured";
            return Err((format!("upstreams.{unknown}"), message.to_owned()));
        }
        let mut by_name = BTreeMap::new();
        for (name, u) in &config.upstreams {
            if let Some(upstream) = kept(name) {
                by_name.insert(name.clone(), (upstream, u.url.clone()));
                continue;
            }
            let mut settings = UpstreamSettings::from_config(&config.defaults, u);
            if let Some(tls) = &u.tls {
                settings.tls = Some(Arc::new(tls::client_config(name, tls)?));
            }
            let upstream = Upstream::instances_with(name, &u.url, settings, metrics, layers);
            by_name.insert(name.clone(), (upstream, u.url.clone()));
        }
        Ok(Self { by_name: Arc::new(by_name) })
    }

    /// The upstream called `name`, if configured.
    pub(crate) fn get(&self, name: &str) -> Option<Upstream> {
        self.by_name.get(name).map(|(u, _)| u.clone())
    }

    /// Each upstream's name and base URL, once per instance.
    pub(crate) fn urls(&self) -> impl Iterator<Item = (&str, &HttpUrl)> {
        self.by_name.iter().flat_map(|(name, (_, urls))| urls.iter().map(move |url| (name.as_str(), url)))
    }
}

/// Characters left as they are in a path segment or query value: RFC 3986 unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes caller input for use as one path segment or query value.
///
/// `encode("../admin")` is `..%2Fadmin`, so a client cannot steer a call to another upstream path.
pub fn encode(input: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(input, UNRESERVED)
}

/// Percent-encodes each item and joins them with `,`: the value of a batch query such as
/// `/products?skus=a,b,c`.
pub fn encode_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(utf8_percent_encode(item, UNRESERVED));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("SKU-0001").to_string(), "SKU-0001");
        assert_eq!(encode("../admin?x=1&y").to_string(), "..%2Fadmin%3Fx%3D1%26y");
        assert_eq!(encode("a b").to_string(), "a%20b");
        assert_eq!(encode_list(["SKU-1", "a,b", "c"]), "SKU-1,a%2Cb,c");
        assert_eq!(encode_list([]), "");
    }
}
