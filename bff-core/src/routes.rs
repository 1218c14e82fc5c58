//! A BFF's routes, each with the [`Access`] it requires, declared side by side.
//!
//! ```no_run
//! # use bff_core::routing::{get, post};
//! # use bff_core::{Access, Routes};
//! # async fn home() {} async fn create() {} async fn docs() {}
//! let routes: Routes = Routes::new()
//!     .route("/mobile/home", get(home), Access::scope("profile"))
//!     .route("/mobile/orders", post(create), Access::scope("orders"))
//!     .route("/openapi.json", get(docs), Access::public());
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::Route as AxumRoute;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::middleware::{Filter, FilterLayer, Middleware, MiddlewareLayer};
use crate::routing::Handlers;

/// What a server serves: a BFF's routes wrapped by the gateway ([`Gateway::router`]), the
/// edge's layers once around every route. An axum [`Router`] becomes one with `into()`, served
/// as it is, without the gateway's layers (a test's upstream, say).
///
/// [`Gateway::router`]: crate::Gateway::router
#[derive(Clone)]
pub struct App(BoxCloneSyncService<Request, Response, Infallible>);

impl App {
    pub(crate) fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self(BoxCloneSyncService::new(service))
    }

    /// Calls this copy itself when it is ready, as the gateway's layers always are (a
    /// connection keeps its own copy, and so does each copy's dispatch); a fresh copy otherwise.
    /// Either way no copy is made for a request that need not have one.
    pub(crate) fn call_in_place(&mut self, request: Request) -> AppFuture {
        match self.0.poll_ready(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(Ok(())) => self.0.call(request),
            std::task::Poll::Pending => Box::pin(tower::ServiceExt::oneshot(self.clone(), request)),
        }
    }
}

/// The future of an [`App`]'s answer.
pub(crate) type AppFuture = <BoxCloneSyncService<Request, Response, Infallible> as Service<Request>>::Future;

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self::new(router)
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.0.call(request)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// The access a route requires.
///
/// Every route says which: `Access::public()` routes are reached without credentials (the
/// credentials layer does not run for them); every other route needs an authenticated caller
/// (a verified token, or a known API key) holding each listed scope. A missing scope is a 403
/// `AUTH_INSUFFICIENT_SCOPE` naming it (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Public,
    Scopes(Arc<[Box<str>]>),
}

impl Access {
    /// Anyone, without credentials (API documents, say).
    pub fn public() -> Self {
        Self(Kind::Public)
    }

    /// Any authenticated caller, whatever its scopes.
    pub fn authenticated() -> Self {
        Self(Kind::Scopes(Arc::from([])))
    }

    /// An authenticated caller granted `scope`.
    pub fn scope(scope: &str) -> Self {
        Self::scopes([scope])
    }

    /// An authenticated caller granted every one of `scopes`.
    pub fn scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Kind::Scopes(scopes.into_iter().map(Box::from).collect()))
    }

    /// Whether the route is reached without credentials.
    pub fn is_public(&self) -> bool {
        self.0 == Kind::Public
    }

    /// The scopes required (none for a public route or any authenticated caller).
    pub fn required(&self) -> impl Iterator<Item = &str> {
        let scopes: &[Box<str>] = match &self.0 {
            Kind::Public => &[],
            Kind::Scopes(scopes) => scopes,
        };
        scopes.iter().map(|s| &**s)
    }

    /// The first required scope that `granted` lacks.
    pub(crate) fn missing(&self, granted: impl Fn(&str) -> bool) -> Option<&str> {
        self.required().find(|scope| !granted(scope))
    }
}

/// One route's policies, resolved when the gateway wraps the routes and attached to the request
/// context of each request the dispatch finds it for: every layer after routing (the access log,
/// access, limits, the request deadline and body limit, shaping) reads them there, rather than
/// looking its pattern up again.
#[derive(Debug)]
pub(crate) struct Route {
    /// How it is named in metrics, logs and config keys: a handler route's pattern, a
    /// passthrough route's `path`.
    pub(crate) pattern: Arc<str>,
    pub(crate) access: Access,
    /// `routes."<pattern>".deadline`, or a passthrough route's `timeout`.
    pub(crate) deadline: Option<Duration>,
    /// `routes."<pattern>".max_body_bytes`.
    pub(crate) max_body_bytes: Option<usize>,
    /// Whether shaping (`fields=`, ETags, compression) applies: not to passthrough routes.
    pub(crate) shaped: bool,
}

/// Routes and the access each requires; handed to [`Gateway::router`](crate::Gateway::router).
#[derive(Debug)]
#[must_use = "routes do nothing until given to `Gateway::router`"]
pub struct Routes<S = ()> {
    /// The routes that need credentials.
    pub(crate) protected: Router<S>,
    /// The routes that do not.
    pub(crate) public: Router<S>,
    /// Every route's pattern and access, in declaration order.
    pub(crate) access: Vec<(String, Access)>,
    /// Every route's pattern and the methods its handlers take (CORS preflights, `405`s).
    pub(crate) methods: Vec<(String, Vec<Method>)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self { protected: Router::new(), public: Router::new(), access: Vec::new(), methods: Vec::new() }
    }

    /// Adds `handlers` (built with [`routing::get`](crate::routing::get) and the others) at
    /// `path`, for callers `access` lets in. A path given twice (for other methods) must be given
    /// the same access: `Gateway::router` refuses it otherwise.
    pub fn route(mut self, path: &str, handlers: Handlers<S>, access: Access) -> Self {
        let Handlers { router, methods } = handlers;
        self.methods.push((path.to_owned(), methods));
        if access.is_public() {
            self.public = self.public.route(path, router);
        } else {
            self.protected = self.protected.route(path, router);
        }
        self.access.push((path.to_owned(), access));
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.protected = self.protected.merge(other.protected);
        self.public = self.public.merge(other.public);
        self.access.extend(other.access);
        self.methods.extend(other.methods);
        self
    }

    /// Wraps every route so far in `layer` (as [`Router::layer`]).
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: Layer<AxumRoute> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self {
            protected: self.protected.layer(layer.clone()),
            public: self.public.layer(layer),
            access: self.access,
            methods: self.methods,
        }
    }

    /// Puts every route so far behind `filter`, a synchronous step written as the gateway's own
    /// are ([`middleware`](crate::middleware)); it runs after credentials, access and limits.
    pub fn filter<F: Filter>(self, filter: F) -> Self {
        self.layer(FilterLayer(filter))
    }

    /// Wraps every route so far in `middleware`, an async step written as the gateway's own are
    /// ([`middleware`](crate::middleware)); it runs after credentials, access and limits.
    pub fn middleware<M: Middleware>(self, middleware: M) -> Self {
        self.layer(MiddlewareLayer(middleware))
    }

    /// Provides the routes' state (as [`Router::with_state`]).
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            protected: self.protected.with_state(state.clone()),
            public: self.public.with_state(state),
            access: self.access,
            methods: self.methods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_scope_is_named() {
        let access = Access::scopes(["profile", "orders"]);
        assert_eq!(access.missing(|s| s == "profile"), Some("orders"));
        assert_eq!(access.missing(|_| true), None);
        assert_eq!(Access::authenticated().missing(|_| false), None);
        assert!(Access::public().is_public() && !Access::authenticated().is_public());
    }
}
