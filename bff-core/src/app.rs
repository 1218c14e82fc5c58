//! The app builder: from a [`Config`] to a served [`Router`] with every configured layer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use crate::carried;
use crate::config::{Config, ConfigError, CorsConfig, LimitKeyKind};
use crate::dispatch::{Dispatch, Proxied, Stacks};
use crate::edge;
use crate::edge::shed::Shed;
use crate::error::BffError;
use crate::limit::Limits;
use crate::limit::layer::{Enforce, Stage};
use crate::middleware::{Filter, FilterLayer, MiddlewareLayer};
use crate::observe::export::SpanSink;
use crate::observe::health::{self, Readiness};
use crate::observe::metrics::{self, Metrics};
use crate::policy::access::{Access, CheckAccess};
use crate::policy::api_key::{ApiKeys, layer::RequireApiKey};
use crate::policy::auth::{JwtVerifier, layer::RequireJwt};
use crate::proxy::Proxies;
use crate::request::{DEGRADED, REQUEST_ID, RoutePolicies};
use crate::route_keys::Patterns;
use crate::routes::{App, Route, Routes};
use crate::serve::{RELOAD_CHECK_INTERVAL, ReloadableApp, Server, Signal, Tls, TlsError};
use crate::session::Sessions;
use crate::session::layer::RequireSession;
use crate::shape::Shape;
use crate::upstream::{Attempt, AttemptLayers, Body as UpstreamBody, BoxError, Upstream, Upstreams};

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
    readiness: Readiness,
    tls: Option<Tls>,
    limits: Option<Limits>,
    proxies: Proxies,
    /// Browser sessions, when `[session]` is configured; kept across reloads.
    sessions: Option<Sessions>,
    /// Where sampled spans go, when `tracing.otlp_endpoint` is set; kept across reloads.
    spans: Option<SpanSink>,
    /// The layers a BFF crate added around its upstreams' attempts; kept across reloads.
    attempt_layers: AttemptLayers,
}

/// A BFF crate's `app`: makes its routes, wrapped by the gateway.
pub type MakeApp = fn(&Gateway) -> Result<App, ConfigError>;

/// The liveness route every BFF serves.
const HEALTHZ: &str = "/healthz";

/// The `Cache-Control` of a protected route's answers, unless its handler set one.
const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-cache");

/// Marks a protected route's answers as one caller's: `Cache-Control: private, no-cache` unless
/// the handler set its own, and `Vary` by the credential (its header names, in `.0`).
#[derive(Clone)]
struct PrivateAnswers(HeaderValue);

impl Filter for PrivateAnswers {
    type State = HeaderValue;

    fn on_request(&self, _request: &mut Request) -> Result<HeaderValue, Response> {
        Ok(self.0.clone())
    }

    fn on_response(vary: HeaderValue, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(header::VARY, vary);
        // One lookup, where `contains_key` then `insert` hash the name twice.
        headers.entry(header::CACHE_CONTROL).or_insert(PRIVATE);
    }
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key cannot be served (`tls.cert`, `tls.key`).
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

/// Builds a [`Gateway`]: `Gateway::builder(config).source("config/mobile.toml").build().await?`.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct GatewayBuilder {
    config: Config,
    source: String,
    metrics: Option<Metrics>,
    spans: Option<Option<SpanSink>>,
    attempt_layers: AttemptLayers,
    /// The gateway this one replaces (a reload): what is unchanged is kept (`carried.rs`).
    previous: Option<Gateway>,
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

    /// Adds `layer` around every attempt sent to the upstream `name`: request signing, a
    /// credential of that upstream's own. It sits just around the HTTP client, inside the
    /// per-try timeout and after the call headers and trace context are set, and runs once per
    /// attempt (a retry passes through it again). Layers added for one upstream stack as
    /// `ServiceBuilder` stacks them: the first added outermost. An upstream the configuration
    /// does not have is a configuration error naming it.
    ///
    /// `bff-core/examples/outbound_layer.rs` signs every call to one upstream.
    pub fn upstream_layer<L>(mut self, name: &str, layer: L) -> Self
    where
        L: tower::Layer<Attempt> + Send + Sync + 'static,
        L::Service: tower::Service<http::Request<UpstreamBody>, Response = http::Response<UpstreamBody>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<http::Request<UpstreamBody>>>::Future: Send + 'static,
    {
        self.attempt_layers.add(name, layer);
        self
    }

    /// Replaces `previous` (a reload): keeps its layers, and keeps its verifier, limits and
    /// upstreams where the keys they were made from are unchanged (`carried.rs`).
    pub(crate) fn replacing(mut self, previous: Gateway) -> Self {
        self.attempt_layers = previous.attempt_layers.clone();
        self.previous = Some(previous);
        self
    }

    /// Exports spans through `spans` (the previous gateway's, on a reload) instead of a sink of
    /// its own.
    pub(crate) fn spans(mut self, spans: Option<SpanSink>) -> Self {
        self.spans = Some(spans);
        self
    }

    /// Checks the configuration and builds the upstream clients and policies. Must be called
    /// inside a Tokio runtime.
    pub async fn build(self) -> Result<Gateway, BuildError> {
        let Self { config, source, metrics, spans, attempt_layers, previous } = self;
        config.validate().map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?;
        let metrics = metrics.unwrap_or_default();
        let kept = |name: &str| {
            let before = previous.as_ref().filter(|p| carried::same_upstream(&p.config, &config, name))?;
            before.upstreams.get(name)
        };
        let upstreams = Upstreams::with_layers(&config, &metrics, &attempt_layers, kept)
            .map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?;
        let claims: Vec<String> = (config.rate_limits.values().map(|limit| &limit.key))
            .chain(config.concurrency_limits.values().map(|limit| &limit.key))
            .filter_map(|key| match key {
                LimitKeyKind::Claim(claim) => Some(claim.clone()),
                _ => None,
            })
            .collect();
        let verifier = match previous.as_ref().filter(|p| carried::same_auth(&p.config, &config)) {
            Some(before) => before.verifier.clone(),
            None => config.auth.as_ref().map(|auth| JwtVerifier::new(auth, &metrics).keep_claims(claims)),
        };
        let api_keys = config.api_keys.as_ref().map(ApiKeys::new);
        let mut dependencies: Vec<(String, url::Url)> =
            upstreams.urls().map(|(n, u)| (n.to_owned(), (**u).clone())).collect();
        if let Some(verifier) = &verifier {
            dependencies.push(("auth".to_owned(), (**verifier.jwks_url()).clone()));
        }
        if let (Some(oidc), Some(_)) = (&config.oidc, &config.session) {
            dependencies.push(("oidc".to_owned(), (*oidc.issuer).clone()));
        }
        let readiness = Readiness::new(dependencies);
        let proxies = Proxies::new(&config, &upstreams)
            .map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?;
        let tls = config.tls.as_ref().map(|tls| Tls::from_files(&tls.cert, &tls.key)).transpose()?;
        let limits = match previous.as_ref().filter(|p| carried::same_limits(&p.config, &config)) {
            Some(before) => before.limits.clone(),
            None => Limits::new(&config, &metrics)
                .await
                .map_err(|message| ConfigError::key(source.clone(), "redis.url", message))?,
        };
        let sessions_in_redis =
            config.session.as_ref().is_some_and(|s| s.store == crate::config::SessionStoreKind::Redis);
        let counted_in_redis = !(config.rate_limits.is_empty() && config.quotas.is_empty());
        if !counted_in_redis && config.redis.is_some() && !sessions_in_redis {
            tracing::warn!(
                "`redis.url` is set, but there are no `rate_limits`, `quotas` or sessions to share: Redis is not used"
            );
        }
        if let Some(everyone) = config.server.trusted_proxies.iter().find(|net| net.is_everything()) {
            tracing::warn!(
                "`server.trusted_proxies` has `{everyone}`: every peer is trusted as a proxy, so any client \
                 names its own address (`X-Forwarded-For`, `Forwarded`) to the `ip` limits and the logs, \
                 and none is held to `server.max_connections_per_ip`: list your proxies' networks"
            );
        }
        let sessions = match previous.as_ref().filter(|p| carried::same_sessions(&p.config, &config)) {
            Some(before) => before.sessions.clone(),
            None => Sessions::from_config(&config, &metrics)
                .await
                .map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?,
        };
        let spans = match spans {
            Some(spans) => spans,
            None => SpanSink::from_config(&config.tracing, &metrics)
                .map_err(|(key, message)| ConfigError::key(source.clone(), key, message))?,
        };
        let config = Arc::new(config);
        let source = Arc::from(source);
        Ok(Gateway {
            config,
            source,
            upstreams,
            verifier,
            api_keys,
            metrics,
            readiness,
            tls,
            limits,
            proxies,
            sessions,
            spans,
            attempt_layers,
        })
    }
}

impl Gateway {
    /// Starts building a gateway from `config`.
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder {
            config,
            source: "the configuration".to_owned(),
            metrics: None,
            spans: None,
            attempt_layers: AttemptLayers::default(),
            previous: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where its sampled spans go (none without `tracing.otlp_endpoint`).
    pub(crate) fn span_sink(&self) -> Option<&SpanSink> {
        self.spans.as_ref()
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

    /// Wraps a BFF's routes with the gateway: on every protected route, the caller's
    /// credentials (JWT or API key), then its [`Access`], then the configured
    /// shaping; the request context, CORS and `/healthz` around all; problem+json for unknown
    /// paths and methods.
    ///
    /// Fails, naming the key or the route, when a `routes."<pattern>"` section of the config is
    /// not the pattern of one of these routes, when a path is given two different accesses, or
    /// when a route needs credentials and the config has neither `auth` nor `api_keys`.
    pub fn router(&self, routes: Routes) -> Result<App, ConfigError> {
        let routes = self.with_session_routes(routes)?;
        let handlers = routes.access.iter().map(|(p, _)| p.as_str()).chain([HEALTHZ]);
        self.proxies
            .check_handlers(handlers)
            .map_err(|(key, message)| ConfigError::key(&*self.source, key, message))?;
        let Routes { protected, public, access, methods: declared } = routes;
        let mut methods: HashMap<String, Vec<Method>> = HashMap::new();
        for (pattern, taken) in declared {
            let known = methods.entry(pattern).or_default();
            for method in taken {
                if !known.contains(&method) {
                    known.push(method);
                }
            }
        }
        let mut table: HashMap<String, Access> = HashMap::new();
        for (pattern, access) in access {
            match table.get(&pattern) {
                Some(declared) if *declared != access => {
                    let message = format!("the route `{pattern}` is declared twice with different access");
                    return Err(ConfigError { source: self.source.to_string(), key: None, message });
                }
                _ => {
                    table.insert(pattern, access);
                }
            }
        }
        table.insert(HEALTHZ.to_owned(), Access::public());
        let policies = self.route_table(&table);
        let proxied: Vec<&Arc<Route>> = self.proxies.policies().collect();
        let every = || policies.iter().chain(proxied.iter().copied());
        self.check_route_keys(&Patterns::new(table.keys().map(String::as_str)), &proxied)?;
        if let Some(route) = every().find(|route| !route.access.is_public())
            && self.verifier.is_none()
            && self.api_keys.is_none()
            && self.sessions.is_none()
        {
            let message = format!(
                "the route `{}` needs an authenticated caller, but neither `auth` nor `api_keys` is configured",
                route.pattern
            );
            return Err(ConfigError { source: self.source.to_string(), key: None, message });
        }
        self.check_limit_routes(&every().collect::<Vec<_>>())?;
        let names = |public: bool| every().filter(move |r| r.access.is_public() == public).map(|r| &*r.pattern);
        let protection = self.protection(names(false));
        let by_address = self.enforce(Stage::Anonymous, names(true));
        let routed = Router::new()
            .route(HEALTHZ, get(health::healthz))
            .merge(public)
            .merge(protected)
            .fallback(|| async { BffError::NotFound("no route for this path".to_owned()) });
        // One stack of each around the whole router, picked by the dispatch from the route's
        // access: not a layer inside each route, which axum would box and clone on every request.
        let routed = edge::with_problems(routed);
        let stacks = protection.stacks(by_address.clone(), routed.clone());
        // Taken before the passthrough routes' methods join them (for CORS and `405`s).
        let handled: Vec<_> = policies
            .iter()
            .map(|policy| {
                let taken = methods.get(&*policy.pattern).map_or_else(Box::default, |m| m.clone().into_boxed_slice());
                (policy.clone(), taken)
            })
            .collect();
        let proxied = (!proxied.is_empty()).then(|| Proxied {
            proxies: self.proxies.clone(),
            stacks: protection.stacks(by_address, self.proxies.forward()),
        });
        for (pattern, taken) in self.proxies.methods() {
            let known = methods.entry(pattern).or_default();
            known.extend(taken.into_iter().filter(|m| !known.contains(m)).collect::<Vec<_>>());
        }
        Ok(self.wrap(Dispatch::new(handled, Some(stacks), proxied, routed), methods))
    }

    /// `routes` with the session endpoints (`/bff/login`, `/bff/callback`, `/bff/user`,
    /// `/bff/logout`) when the BFF has sessions; a BFF route of its own under `/bff/` is an error
    /// naming it.
    fn with_session_routes(&self, routes: Routes) -> Result<Routes, ConfigError> {
        let Some(sessions) = &self.sessions else { return Ok(routes) };
        if let Some((taken, _)) = routes.access.iter().find(|(path, _)| path.starts_with("/bff/")) {
            let message = format!("the route `{taken}` is under `/bff/`, where `[session]` serves its endpoints");
            return Err(ConfigError { source: self.source.to_string(), key: None, message });
        }
        let endpoints = crate::session::routes(sessions);
        Ok(endpoints.into_iter().fold(routes, |routes, (path, method)| routes.route(path, method, Access::public())))
    }

    /// Every handler route's policies, resolved once: its access and its `routes."<pattern>"`
    /// settings.
    fn route_table(&self, access: &HashMap<String, Access>) -> Vec<Arc<Route>> {
        let routes = access.iter().map(|(pattern, access)| {
            let settings = self.config.routes.get(pattern);
            Arc::new(Route {
                pattern: Arc::from(pattern.as_str()),
                access: access.clone(),
                deadline: settings.and_then(|s| s.deadline),
                max_body_bytes: settings.and_then(|s| s.max_body_bytes),
                shaped: true,
            })
        });
        routes.collect()
    }

    /// Every route a rate limit lists is one of this BFF's `routes`, and one its key can be
    /// known on.
    fn check_limit_routes(&self, routes: &[&Arc<Route>]) -> Result<(), ConfigError> {
        let config = &self.config;
        let rates = config.rate_limits.iter().map(|(n, l)| ("rate_limits", n, &l.key, &l.routes));
        let in_flight = config.concurrency_limits.iter().map(|(n, l)| ("concurrency_limits", n, &l.key, &l.routes));
        for (table, name, key, patterns) in rates.chain(in_flight) {
            for pattern in patterns.iter().flatten() {
                let route = routes.iter().find(|r| &*r.pattern == pattern.as_str());
                let message = match route {
                    None => format!("this BFF has no route `{pattern}`"),
                    Some(route) if !key.is_anonymous() && route.access.is_public() => {
                        format!("the route `{pattern}` is public: there is no caller to key `{key}` by")
                    }
                    Some(_) => continue,
                };
                return Err(ConfigError::key(&*self.source, format!("{table}.{name}.routes"), message));
            }
        }
        Ok(())
    }

    /// The limits layer of `stage` for the routes `patterns`, if any of them is limited.
    fn enforce<'a>(&self, stage: Stage, patterns: impl IntoIterator<Item = &'a str>) -> Option<Enforce> {
        Enforce::new(self.limits.as_ref()?, stage, patterns, &self.metrics)
    }

    /// Every `routes."<pattern>"` key names a handler route's pattern (`patterns`) or a
    /// passthrough route's `path` (`proxied`).
    fn check_route_keys(&self, patterns: &Patterns, proxied: &[&Arc<Route>]) -> Result<(), ConfigError> {
        for pattern in self.config.routes.keys() {
            if proxied.iter().any(|route| &*route.pattern == pattern.as_str()) {
                continue;
            }
            let matched = patterns.matched(pattern);
            if matched != Some(pattern.as_str()) {
                let hint =
                    matched.map(|m| format!("; it matches the route `{m}`: use that pattern")).unwrap_or_default();
                let message = format!("this BFF has no route with this pattern{hint}");
                return Err(ConfigError::key(&*self.source, format!("routes.\"{pattern}\""), message));
            }
        }
        Ok(())
    }

    /// The layers of the protected routes `patterns` (handler patterns and passthrough paths).
    fn protection<'a>(&self, patterns: impl IntoIterator<Item = &'a str> + Clone) -> Protection {
        let api_keys = if self.verifier.is_none() { self.api_keys.clone() } else { None };
        // An answer for one caller: no shared cache may keep it (a browser may, revalidating with
        // the ETag), and caches that do must key it by the credential.
        let credential = match (&api_keys, &self.sessions) {
            (Some(keys), _) => {
                HeaderValue::from_str(keys.header().as_str()).unwrap_or(HeaderValue::from_static("x-api-key"))
            }
            (None, Some(_)) => HeaderValue::from_static("authorization, cookie"),
            (None, None) => HeaderValue::from_static("authorization"),
        };
        let shaping = self.config.shaping;
        Protection {
            credential,
            by_address: self.enforce(Stage::Anonymous, patterns.clone()),
            verifier: self.verifier.clone(),
            sessions: self.sessions.clone(),
            api_keys,
            by_caller: self.enforce(Stage::Caller, patterns),
            shape: shaping.any().then(|| Shape::new(shaping)),
        }
    }

    fn wrap(&self, dispatch: Dispatch, methods: HashMap<String, Vec<Method>>) -> App {
        let cors = self.config.cors.as_ref().map(|cors| (cors_layer(cors), methods));
        // The edge and CORS wrap the dispatch once, rather than each route.
        let shed = Shed::new(self.config.server.max_in_flight_requests, &self.metrics);
        // Only with `[tls]`: a browser ignores the header over plain HTTP (RFC 6797 §8.1).
        let hsts = self.config.tls.as_ref().and_then(|_| edge::hsts::Hsts::new(&self.config.hsts));
        let front = edge::Front { cors, shed, hsts };
        edge::wrap(dispatch, &self.config, self.route_policies(), self.metrics.clone(), self.spans.clone(), Some(front))
    }

    fn route_policies(&self) -> RoutePolicies {
        RoutePolicies {
            default_deadline: self.config.defaults.deadline,
            default_max_body_bytes: self.config.server.max_body_bytes,
            concurrency: self.config.defaults.concurrency.get(),
            decode_gzip: self.config.server.request_body_codings.contains(&crate::config::RequestCoding::Gzip),
        }
    }

    /// The admin endpoints, for the admin listener (`admin.listen`): `GET /metrics`,
    /// `GET /readyz` and `GET /healthz`. Nothing here needs credentials, so it belongs on an
    /// address only operators reach.
    pub fn admin_router(&self) -> App {
        let routed = Router::new()
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz).with_state(self.readiness.clone()))
            .route("/metrics", get(metrics::metrics_get).with_state(self.metrics.clone()))
            .fallback(|| async { BffError::NotFound("no route for this path".to_owned()) });
        let access = ["/healthz", "/readyz", "/metrics"].map(|p| (p.to_owned(), Access::public())).into();
        let handled = self.route_table(&access).into_iter().map(|policy| (policy, Box::default()));
        let dispatch = Dispatch::new(handled, None, None, edge::with_problems(routed));
        // Never shed: operators must see the process when it is busiest.
        edge::wrap(dispatch, &self.config, self.route_policies(), self.metrics.clone(), self.spans.clone(), None)
    }

    /// Serves `router` on `public` and the [admin router](Gateway::admin_router) on `admin`,
    /// under `server`'s limits, until `shutdown` completes. Then `/readyz` answers 503; on
    /// [`Signal::Terminate`] requests are still served for `server.drain_delay` (load balancers
    /// see the 503 and stop sending traffic); then the listeners close and in-flight requests
    /// get `server.shutdown_grace` to finish.
    pub async fn serve(
        &self,
        public: TcpListener,
        admin: Option<TcpListener>,
        router: impl Into<ReloadableApp>,
        shutdown: impl Future<Output = Signal> + Send + 'static,
    ) -> std::io::Result<()> {
        let readiness = self.readiness.clone();
        let drain_delay = self.config.server.drain_delay;
        let stop = async move {
            let signal = shutdown.await;
            readiness.drain();
            if signal == Signal::Terminate && !drain_delay.is_zero() {
                tracing::info!(delay = ?drain_delay, "draining: /readyz answers 503; serving until the delay is over");
                tokio::time::sleep(drain_delay).await;
            }
        };
        let stop = futures::FutureExt::shared(Box::pin(stop) as futures::future::BoxFuture<'static, ()>);
        let server = || Server::new(&self.config.server).metrics(self.metrics.clone());
        let reloading = self.tls.as_ref().map(|tls| tls.watch(RELOAD_CHECK_INTERVAL));
        let public = server().tls(self.tls.clone()).serve(public, router, stop.clone());
        let admin = async {
            match admin {
                Some(listener) => server().serve(listener, self.admin_router(), stop).await,
                None => Ok(()),
            }
        };
        let (public, admin) = tokio::join!(public, admin);
        if let Some(reloading) = reloading {
            reloading.abort();
        }
        if let Some(spans) = &self.spans {
            let grace = self.config.server.shutdown_grace;
            if !spans.flush(grace).await {
                tracing::warn!(?grace, "spans still queued for export when the grace ran out: dropped");
            }
        }
        public.and(admin)
    }
}

/// The layers of every protected route, outermost first: `Cache-Control: private, no-cache` and
/// `Vary` by the credential on the answer; limits by address; credentials (JWT, API key, or a
/// session cookie with its CSRF checks); access
/// (scopes); limits by caller; then shaping (compression, `fields=`, ETag), which runs after the
/// caller is known, so a request without credentials is a 401 before its query is looked at.
///
/// One stack around each handler route (one `route_layer`, not one per concern: axum boxes each
/// layer applied to a router separately, and clones every box inside a route on every request),
/// and one around the forwarding of the protected passthrough routes.
#[derive(Clone)]
struct Protection {
    credential: HeaderValue,
    by_address: Option<Enforce>,
    verifier: Option<JwtVerifier>,
    sessions: Option<Sessions>,
    api_keys: Option<ApiKeys>,
    by_caller: Option<Enforce>,
    shape: Option<Shape>,
}

impl Protection {
    /// The stacks around `inner`: the protected routes' (this protection) and the public
    /// routes' (their limits by address, `by_address`, when any).
    fn stacks<S>(&self, by_address: Option<Enforce>, inner: S) -> Stacks
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let public = ServiceBuilder::new().option_layer(by_address.map(MiddlewareLayer)).service(inner.clone());
        Stacks::new(App::new(public), App::new(self.wrap(inner)))
    }

    fn wrap<S>(
        &self,
        inner: S,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
    + use<S>
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        ServiceBuilder::new()
            .layer(FilterLayer(PrivateAnswers(self.credential.clone())))
            .option_layer(self.by_address.clone().map(MiddlewareLayer))
            .option_layer(
                self.verifier.clone().filter(|_| self.sessions.is_none()).map(|v| MiddlewareLayer(RequireJwt(v))),
            )
            .option_layer(self.sessions.clone().map(|sessions| {
                MiddlewareLayer(RequireSession { bearer: self.verifier.clone().map(RequireJwt), sessions })
            }))
            .option_layer(self.api_keys.clone().map(|keys| MiddlewareLayer(RequireApiKey(keys))))
            .layer(FilterLayer(CheckAccess))
            .option_layer(self.by_caller.clone().map(MiddlewareLayer))
            .option_layer(self.shape.clone().map(MiddlewareLayer))
            .service(inner)
    }
}

fn cors_layer(config: &CorsConfig) -> CorsLayer {
    let origins: Vec<HeaderValue> = config.allow_origins.iter().map(|o| o.header_value().clone()).collect();
    // Credentials are allowed for the listed origins only: a response to any other origin does
    // not say `Access-Control-Allow-Credentials: true`.
    let allowed = origins.clone();
    let credentials = if config.allow_credentials {
        AllowCredentials::predicate(move |origin, _| allowed.contains(origin))
    } else {
        AllowCredentials::default()
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(credentials)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static(REQUEST_ID),
            HeaderName::from_static(crate::idempotency::IDEMPOTENCY_KEY),
            HeaderName::from_static(crate::session::CSRF_HEADER),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static(REQUEST_ID),
            HeaderName::from_static(DEGRADED),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(config.max_age)
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use tower::{Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn private_answers_keep_a_handlers_cache_control_and_add_to_its_vary() {
        let layer = FilterLayer(PrivateAnswers(HeaderValue::from_static("authorization")));
        let plain = tower::service_fn(|_: Request| async { Ok::<_, Infallible>("plain".into_response()) });
        let response = layer.layer(plain).oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "private, no-cache");
        assert_eq!(response.headers()[header::VARY], "authorization");

        let own = tower::service_fn(|_: Request| async {
            let headers = [(header::CACHE_CONTROL, "no-store"), (header::VARY, "accept-encoding")];
            Ok::<_, Infallible>((headers, "own").into_response())
        });
        let response = layer.layer(own).oneshot(Request::new(Body::empty())).await.unwrap();
        let cache_control: Vec<_> = response.headers().get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(cache_control, ["no-store"], "the handler's own Cache-Control is kept, alone");
        let vary: Vec<_> = response.headers().get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "authorization"]);
    }
}
