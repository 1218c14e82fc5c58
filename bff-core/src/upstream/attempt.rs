//! Layers a BFF crate adds around every attempt to one upstream
//! ([`GatewayBuilder::upstream_layer`](crate::GatewayBuilder::upstream_layer)): request signing,
//! a credential of the upstream's own. They sit innermost, just around the HTTP client: inside
//! the per-try timeout (which bounds them), after the call headers and the trace context are
//! set (so a signature covers them), and once per attempt (a retry is signed again).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

use super::stack::Outbound;
use super::{Body, BoxError};

/// One attempt to an upstream instance, as the tower service an upstream layer wraps: send it
/// the request (`http::Request<Body>`), get the response or the error.
#[derive(Clone)]
pub struct Attempt(Outbound<Request<Body>>);

impl Attempt {
    pub(crate) fn new<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self(Outbound::new(service))
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Attempt")
    }
}

impl Service<Request<Body>> for Attempt {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.0.send(request)
    }
}

type Wrap = Arc<dyn Fn(Attempt) -> Attempt + Send + Sync>;

/// The layers added per upstream, by upstream name, in the order they were added.
#[derive(Clone, Default)]
pub(crate) struct AttemptLayers(BTreeMap<String, Vec<Wrap>>);

impl fmt::Debug for AttemptLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(name, layers)| (name, layers.len()))).finish()
    }
}

impl AttemptLayers {
    pub(crate) fn add<L>(&mut self, upstream: &str, layer: L)
    where
        L: Layer<Attempt> + Send + Sync + 'static,
        L::Service: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        let wrap: Wrap = Arc::new(move |inner| Attempt::new(layer.layer(inner)));
        self.0.entry(upstream.to_owned()).or_default().push(wrap);
    }

    /// The names of the upstreams with layers.
    pub(crate) fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether `upstream` has layers.
    pub(crate) fn has(&self, upstream: &str) -> bool {
        self.0.contains_key(upstream)
    }

    /// `client` inside `upstream`'s layers, the first added outermost (as `ServiceBuilder`
    /// stacks them).
    pub(crate) fn wrap<S>(&self, upstream: &str, client: S) -> Attempt
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let layers = self.0.get(upstream).map_or(&[][..], Vec::as_slice);
        layers.iter().rev().fold(Attempt::new(client), |inner, wrap| wrap(inner))
    }
}
