//! Named downstream services and typed calls to them.
//!
//! An [`Upstream`] owns a pooled HTTP client and the stack of outbound policies that wraps every
//! call to it (today: deadline-bounded timeout → HTTP; retries and breakers slot in here, each an
//! [`Outbound`] wrapping the next).
//! A [`Call`] describes one request; it runs inside a fan-out (`Ctx::fanout`), which supplies the
//! deadline and the request id.

mod error;
mod timeout;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use bytes::Bytes;
use futures::future::BoxFuture;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tower::ServiceExt;

pub use error::{UpstreamError, UpstreamErrorKind};

use crate::config::{Config, ConfigError, Defaults, UpstreamConfig, UpstreamProtocol};
use crate::observe::metrics;
use crate::request::Ctx;

/// One request to an upstream, as the outbound policy stack sees it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The HTTP method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Propagated as `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The request deadline; no call outlives it.
    pub deadline: Instant,
}

/// One step of an upstream's outbound policy stack: takes a request, yields the 2xx body.
///
/// Steps are shared by every call (`&self`), so the stack is built once per upstream and never
/// cloned on the request path.
pub trait Outbound: Send + Sync + 'static {
    /// Sends `request` through this step and the ones inside it.
    fn call(&self, request: OutboundRequest) -> BoxFuture<'static, Result<Bytes, UpstreamError>>;
}

/// Any tower service as the innermost step (an in-memory fake in tests and benchmarks).
struct TowerOutbound<S>(S);

impl<S> Outbound for TowerOutbound<S>
where
    S: tower::Service<OutboundRequest, Response = Bytes, Error = UpstreamError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, request: OutboundRequest) -> BoxFuture<'static, Result<Bytes, UpstreamError>> {
        Box::pin(self.0.clone().oneshot(request))
    }
}

/// How an [`Upstream`] connects, and how long one call to it may take.
///
/// Start from [`UpstreamSettings::default`] (the config defaults) and set what differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamSettings {
    /// The longest one call may take (also bounded by what is left of the request deadline).
    pub timeout: Duration,
    /// The longest establishing a connection may take.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections kept.
    pub pool_max_idle: usize,
    /// The HTTP version of calls.
    pub protocol: UpstreamProtocol,
}

impl UpstreamSettings {
    /// One upstream's section with `defaults` filled in where it is silent.
    pub fn from_config(defaults: &Defaults, upstream: &UpstreamConfig) -> Self {
        Self {
            timeout: upstream.timeout.unwrap_or(defaults.timeout),
            connect_timeout: upstream.connect_timeout.unwrap_or(defaults.connect_timeout),
            pool_max_idle: defaults.pool_max_idle_per_host,
            protocol: upstream.protocol.unwrap_or(defaults.protocol),
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
            protocol: d.protocol,
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
    stack: Box<dyn Outbound>,
    metrics: metrics::UpstreamMetrics,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds an upstream at `base` (an `http` or `https` URL) with its own connection pool.
    /// BFFs get theirs from config ([`Upstreams::from_config`]); this is for code that needs one
    /// of its own.
    ///
    /// ```
    /// use bff_core::config::UpstreamProtocol;
    /// use bff_core::{Upstream, UpstreamSettings};
    ///
    /// let mut settings = UpstreamSettings::default();
    /// settings.protocol = UpstreamProtocol::Http2;
    /// let users = Upstream::new("users", &"http://127.0.0.1:7001".parse().unwrap(), settings);
    /// assert_eq!(users.name(), "users");
    /// ```
    pub fn new(name: &str, base: &url::Url, settings: UpstreamSettings) -> Self {
        let name: Arc<str> = Arc::from(name);
        let transport = transport::HttpTransport::new(name.clone(), base, &settings);
        let stack = timeout::CallTimeout { inner: transport, name: name.clone(), timeout: settings.timeout };
        Self::with_stack(name, Box::new(stack))
    }

    /// An upstream over any service (an in-memory fake in tests and benchmarks), with the same
    /// deadline-bounded timeout as a real one.
    pub fn from_service<S>(name: &str, timeout: Duration, service: S) -> Self
    where
        S: tower::Service<OutboundRequest, Response = Bytes, Error = UpstreamError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let name: Arc<str> = Arc::from(name);
        let stack = timeout::CallTimeout { inner: TowerOutbound(service), name: name.clone(), timeout };
        Self::with_stack(name, Box::new(stack))
    }

    fn with_stack(name: Arc<str>, stack: Box<dyn Outbound>) -> Self {
        let metrics = metrics::UpstreamMetrics::new(&name);
        Self { inner: Arc::new(UpstreamInner { name, stack, metrics }) }
    }

    /// The upstream's name, as in config and in errors.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A `GET` of `path` (with query; encode caller input with [`encode`]) decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: impl Into<String>) -> Call<T> {
        Call { upstream: self.clone(), method: Method::GET, path: path.into(), _output: PhantomData }
    }

    /// Sends one request through the policy stack and returns the 2xx body.
    pub async fn send(&self, request: OutboundRequest) -> Result<Bytes, UpstreamError> {
        self.exchange(request, Ok).await
    }

    /// Sends one request and decodes its 2xx JSON body as `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, request: OutboundRequest) -> Result<T, UpstreamError> {
        self.exchange(request, |body| {
            serde_json::from_slice(&body)
                .map_err(|e| UpstreamError::new(self.inner.name.clone(), UpstreamErrorKind::Decode).with_cause(e))
        })
        .await
    }

    /// Every call goes through here, so every call is counted in the upstream metrics, its
    /// decoding included.
    async fn exchange<T>(
        &self,
        request: OutboundRequest,
        decode: impl FnOnce(Bytes) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let start = Instant::now();
        let result = self.inner.stack.call(request).await.and_then(decode);
        self.inner.metrics.record(result.as_ref().map(|_| ()), start.elapsed());
        result
    }
}

/// A described but not yet sent upstream call whose 2xx JSON body decodes as `T`.
#[must_use = "a Call does nothing until it runs in a fan-out"]
pub struct Call<T> {
    upstream: Upstream,
    method: Method,
    path: String,
    _output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("upstream", &self.upstream.inner.name)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish()
    }
}

impl<T: DeserializeOwned> Call<T> {
    /// The upstream this call goes to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends the call under `ctx`'s deadline and request id, and decodes the body.
    pub async fn send(self, ctx: &Ctx) -> Result<T, UpstreamError> {
        let request = OutboundRequest {
            method: self.method,
            path: self.path,
            request_id: ctx.request_id().clone(),
            deadline: ctx.deadline(),
        };
        self.upstream.send_json(request).await
    }
}

/// Every upstream named in the configuration, by name.
#[derive(Debug, Clone)]
pub struct Upstreams {
    source: Arc<str>,
    by_name: Arc<BTreeMap<String, (Upstream, url::Url)>>,
}

impl Upstreams {
    /// Builds a client per upstream section, merging `defaults` explicitly.
    pub fn from_config(config: &Config, source: &str) -> Self {
        let by_name = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let upstream = Upstream::new(name, &u.url, UpstreamSettings::from_config(&config.defaults, u));
                (name.clone(), (upstream, u.url.clone()))
            })
            .collect();
        Self { source: Arc::from(source), by_name: Arc::new(by_name) }
    }

    /// The upstream called `name`; an error naming the missing config section otherwise.
    pub fn get(&self, name: &str) -> Result<Upstream, ConfigError> {
        self.by_name.get(name).map(|(u, _)| u.clone()).ok_or_else(|| {
            ConfigError::key(&*self.source, format!("upstreams.{name}"), "this BFF calls it, but it is not configured")
        })
    }

    /// Each upstream's name and base URL.
    pub fn urls(&self) -> impl Iterator<Item = (&str, &url::Url)> {
        self.by_name.iter().map(|(name, (_, url))| (name.as_str(), url))
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
