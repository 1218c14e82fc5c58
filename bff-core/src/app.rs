//! The app builder: from a [`Config`] to a served [`Router`] with every configured layer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, ConfigError, CorsConfig};
use crate::edge::{self, access_log::mark_route};
use crate::error::BffError;
use crate::middleware::MiddlewareLayer;
use crate::observe::health::{self, Dependencies};
use crate::observe::metrics::{self, Metrics};
use crate::policy::api_key::{ApiKeys, layer::RequireApiKey};
use crate::policy::auth::{JwtVerifier, layer::RequireJwt};
use crate::request::{DEGRADED, REQUEST_ID, RoutePolicies};
use crate::route_keys;
use crate::shape::Shape;
use crate::upstream::{Upstream, Upstreams};

/// A configured gateway: its upstream clients, policies and metrics, ready to wrap a BFF's routes.
///
/// Made by [`Gateway::builder`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    config: Arc<Config>,
    source: Arc<str>,
    upstreams: Upstreams,
    verifier: Option<JwtVerifier>,
    api_keys: Option<ApiKeys>,
    metrics: Metrics,
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Builds a [`Gateway`]: `Gateway::builder(config).source("config/mobile.toml").build().await?`.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct GatewayBuilder {
    config: Config,
    source: String,
    metrics: Option<Metrics>,
}

impl GatewayBuilder {
    /// Names where the configuration came from, for error messages (a file path).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Records into `metrics` instead of a registry of the gateway's own.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the configuration and builds the upstream clients and policies. Must be called
    /// inside a Tokio runtime (the metrics upkeep runs on it).
    pub async fn build(self) -> Result<Gateway, BuildError> {
        let Self { config, source, metrics } = self;
        config.validate().map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?;
        let metrics = metrics.unwrap_or_default();
        metrics.spawn_upkeep();
        let upstreams = Upstreams::from_config(&config, &metrics);
        let verifier = config.auth.as_ref().map(|auth| JwtVerifier::new(auth, &metrics));
        let api_keys = config.api_keys.as_ref().map(ApiKeys::new);
        Ok(Gateway { config: Arc::new(config), source: Arc::from(source), upstreams, verifier, api_keys, metrics })
    }
}

impl Gateway {
    /// Starts building a gateway from `config`.
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder { config, source: "the configuration".to_owned(), metrics: None }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gateway's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The upstream called `name`, or an error naming the missing `upstreams.<name>` section.
    pub fn upstream(&self, name: &str) -> Result<Upstream, ConfigError> {
        self.upstreams.get(name).ok_or_else(|| {
            ConfigError::key(&*self.source, format!("upstreams.{name}"), "this BFF calls it, but it is not configured")
        })
    }

    /// Wraps a BFF's routes with the gateway: authentication (JWT or API key) and the configured
    /// shaping on every one of them; the request context, CORS, `/healthz` and `/readyz` around
    /// all; problem+json for unknown paths and methods.
    ///
    /// Fails, naming the key, when a `routes."<pattern>"` section of the config is not the
    /// pattern of one of these routes.
    pub fn router(&self, routes: Router) -> Result<Router, ConfigError> {
        self.router_with_public(routes, Router::new())
    }

    /// Like [`Gateway::router`], plus `public` routes that need no credentials (API documents).
    pub fn router_with_public(&self, routes: Router, public: Router) -> Result<Router, ConfigError> {
        self.check_route_keys(&routes.clone().merge(public.clone()))?;
        Ok(self.wrap(self.authenticated(routes), public))
    }

    fn check_route_keys(&self, routes: &Router) -> Result<(), ConfigError> {
        for pattern in self.config.routes.keys() {
            let matched = route_keys::matched_pattern(routes, pattern);
            if matched.as_deref() != Some(pattern.as_str()) {
                let hint =
                    matched.map(|m| format!("; it matches the route `{m}`: use that pattern")).unwrap_or_default();
                let message = format!("this BFF has no route with this pattern{hint}");
                return Err(ConfigError::key(&*self.source, format!("routes.\"{pattern}\""), message));
            }
        }
        Ok(())
    }

    /// The BFF's own routes behind, outermost first: shaping (compression, `fields=`, ETag), then
    /// authentication.
    ///
    /// One `route_layer` with the whole stack, not one per concern: axum boxes each layer applied
    /// to a router separately, and clones every box inside a route on every request.
    fn authenticated(&self, routes: Router) -> Router {
        let shaping = self.config.shaping;
        let api_keys = if self.verifier.is_none() { self.api_keys.clone() } else { None };
        let stack = ServiceBuilder::new()
            .layer(MapRequestLayer::new(mark_route))
            .option_layer(shaping.any().then_some(MiddlewareLayer(Shape(shaping))))
            .option_layer(self.verifier.clone().map(|verifier| MiddlewareLayer(RequireJwt(verifier))))
            .option_layer(api_keys.map(|keys| MiddlewareLayer(RequireApiKey(keys))));
        routes.route_layer(stack)
    }

    fn wrap(&self, routes: Router, public: Router) -> Router {
        let mut deps: Vec<(String, url::Url)> =
            self.upstreams.urls().map(|(n, u)| (n.to_owned(), (**u).clone())).collect();
        if let Some(verifier) = &self.verifier {
            deps.push(("auth".to_owned(), (**verifier.jwks_url()).clone()));
        }
        let deadlines = self.config.routes.iter().filter_map(|(p, r)| r.deadline.map(|d| (p.clone(), d)));
        let policies = RoutePolicies {
            default_deadline: self.config.defaults.deadline,
            deadlines: Arc::new(deadlines.collect::<HashMap<_, _>>()),
            concurrency: self.config.defaults.concurrency.get(),
        };
        let routed = Router::new()
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz).with_state(Dependencies(deps)))
            .route("/metrics", get(metrics::metrics_get).with_state(self.metrics.clone()))
            .merge(public)
            .route_layer(MapRequestLayer::new(mark_route))
            .merge(routes)
            .fallback(|| async { BffError::NotFound("no route for this path".to_owned()) });
        // The edge and CORS wrap the routed router once, rather than each route (see `authenticated`).
        edge::wrap(routed, policies, self.metrics.clone(), self.config.cors.as_ref().map(cors_layer))
    }
}

fn cors_layer(config: &CorsConfig) -> CorsLayer {
    let origins: Vec<HeaderValue> = config.allow_origins.iter().map(|o| o.header_value().clone()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(config.allow_credentials)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static(REQUEST_ID),
            HeaderName::from_static(crate::request::idempotency::IDEMPOTENCY_KEY),
        ])
        .expose_headers([header::ETAG, HeaderName::from_static(REQUEST_ID), HeaderName::from_static(DEGRADED)])
        .max_age(config.max_age)
}

/// Serves `router` until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
}

/// Declares the upstreams a BFF calls, as a struct resolved from the gateway in one go: each
/// field is the upstream of that name, and a missing one is a config error naming it.
///
/// ```no_run
/// bff_core::upstreams! {
///     /// What the home screen calls.
///     pub struct Upstreams { users, orders, notifications }
/// }
/// # fn app(gateway: &bff_core::Gateway) -> Result<(), bff_core::ConfigError> {
/// let upstreams = Upstreams::from_gateway(gateway)?;
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! upstreams {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            $(pub(crate) $field: $crate::Upstream,)+
        }

        impl $name {
            /// Resolves every upstream, failing on the first one missing from the config.
            $vis fn from_gateway(gateway: &$crate::Gateway) -> ::std::result::Result<Self, $crate::ConfigError> {
                Ok(Self { $($field: gateway.upstream(stringify!($field))?,)+ })
            }
        }
    };
}
