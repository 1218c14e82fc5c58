//! The app builder: from a [`Config`] to a served [`Router`] with every configured layer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError};
use crate::error::BffError;
use crate::observe::health::{self, Dependencies};
use crate::policy::auth::{JwtVerifier, layer::require_jwt};
use crate::request::{RoutePolicies, layer::edge};
use crate::upstream::{Upstream, Upstreams};

/// A configured gateway: its upstream clients and policies, ready to wrap a BFF's routes.
#[derive(Debug, Clone)]
pub struct Gateway {
    config: Arc<Config>,
    upstreams: Upstreams,
    verifier: Option<JwtVerifier>,
}

impl Gateway {
    /// Builds the upstream clients and policies of `config`; `source` names the config for errors.
    pub fn new(config: Config, source: &str) -> Self {
        let upstreams = Upstreams::from_config(&config, source);
        let verifier = config.auth.as_ref().map(JwtVerifier::new);
        Self {
            config: Arc::new(config),
            upstreams,
            verifier,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The upstream called `name`, or an error naming the missing `upstreams.<name>` section.
    pub fn upstream(&self, name: &str) -> Result<Upstream, ConfigError> {
        self.upstreams.get(name)
    }

    /// Wraps a BFF's routes with the gateway: auth on every one of them, the request context,
    /// `/healthz` and `/readyz`, and problem+json for unknown paths and methods.
    pub fn router(&self, routes: Router) -> Router {
        let routes = match &self.verifier {
            Some(verifier) => routes.route_layer(from_fn_with_state(verifier.clone(), require_jwt)),
            None => routes,
        };
        let mut deps: Vec<(String, url::Url)> = self
            .upstreams
            .urls()
            .map(|(n, u)| (n.to_owned(), u.clone()))
            .collect();
        if let Some(verifier) = &self.verifier {
            deps.push(("auth".to_owned(), verifier.jwks_url().clone()));
        }
        let policies = RoutePolicies {
            default_deadline: self.config.defaults.deadline,
            deadlines: Arc::new(
                self.config
                    .routes
                    .iter()
                    .filter_map(|(p, r)| r.deadline.map(|d| (p.clone(), d)))
                    .collect::<HashMap<_, _>>(),
            ),
            concurrency: self.config.defaults.concurrency.get(),
        };
        Router::new()
            .route("/healthz", get(health::healthz))
            .route(
                "/readyz",
                get(health::readyz).with_state(Dependencies(deps)),
            )
            .merge(routes)
            .fallback(|| async { BffError::NotFound("no route for this path".to_owned()) })
            .layer(from_fn(method_not_allowed))
            .layer(from_fn_with_state(policies, edge))
    }
}

/// axum answers an unsupported method with an empty 405; give it the problem+json body.
async fn method_not_allowed(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED
        && response
            .extensions()
            .get::<crate::error::ErrorReport>()
            .is_none()
    {
        let allow = response.headers().get(axum::http::header::ALLOW).cloned();
        let mut problem = BffError::MethodNotAllowed.into_response();
        if let Some(allow) = allow {
            problem
                .headers_mut()
                .insert(axum::http::header::ALLOW, allow);
        }
        return problem;
    }
    response
}

/// Serves `router` until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
