//! A BFF's routes, each with the [`Access`] it requires, declared side by side.
//!
//! ```no_run
//! # use axum::routing::{get, post};
//! # use bff_core::{Access, Routes};
//! # async fn home() {} async fn create() {} async fn docs() {}
//! let routes: Routes = Routes::new()
//!     .route("/mobile/home", get(home), Access::scope("profile"))
//!     .route("/mobile/orders", post(create), Access::scope("orders"))
//!     .route("/openapi.json", get(docs), Access::public());
//! ```

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, Route};
use tower::{Layer, Service};

use crate::policy::access::Access;

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
    /// Every route's pattern and handlers, kept to ask which methods it takes (CORS).
    pub(crate) method_routers: Vec<(String, MethodRouter<S>)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self { protected: Router::new(), public: Router::new(), access: Vec::new(), method_routers: Vec::new() }
    }

    /// Adds `method_router` at `path`, for callers `access` lets in. A path given twice (for
    /// other methods) must be given the same access: `Gateway::router` refuses it otherwise.
    pub fn route(mut self, path: &str, method_router: MethodRouter<S>, access: Access) -> Self {
        self.method_routers.push((path.to_owned(), method_router.clone()));
        if access.is_public() {
            self.public = self.public.route(path, method_router);
        } else {
            self.protected = self.protected.route(path, method_router);
        }
        self.access.push((path.to_owned(), access));
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.protected = self.protected.merge(other.protected);
        self.public = self.public.merge(other.public);
        self.access.extend(other.access);
        self.method_routers.extend(other.method_routers);
        self
    }

    /// Wraps every route so far in `layer` (as [`Router::layer`]).
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self {
            protected: self.protected.layer(layer.clone()),
            public: self.public.layer(layer),
            access: self.access,
            method_routers: self.method_routers,
        }
    }

    /// Provides the routes' state (as [`Router::with_state`]).
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        let method_routers = self.method_routers.into_iter().map(|(p, m)| (p, m.with_state(state.clone()))).collect();
        Routes {
            protected: self.protected.with_state(state.clone()),
            public: self.public.with_state(state),
            access: self.access,
            method_routers,
        }
    }
}
