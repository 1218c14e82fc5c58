//! The inbound stack around every route, one concern per layer, outermost first:
//!
//! 1. **request id** (`request_id.rs`): every request has an `X-Request-Id` (a client's is kept
//!    when it is short and plain), echoed on the response.
//! 2. **span** (`span.rs`): the request's trace (W3C `traceparent`, continued when valid and
//!    trusted, else new), and one `request` span with the id, method, path, trace and span ids,
//!    around everything inside; and the request context (`context.rs`) in that trace: the
//!    deadline clock, the matched route and the degradations list a handler's
//!    [`Ctx`](crate::Ctx) reads.
//! 3. **degradations** (`context.rs`): the request context's `X-Bff-Degraded` on the way out.
//! 4. **access log + metrics** (`access_log.rs`): one log line and the request series per
//!    request, with the matched route, status, latency, error code and degradations (read from
//!    the request context).
//! 5. **problem details** (`problem.rs`): problem+json bodies get the request id; axum's bare 405
//!    becomes one.
//! 6. **load shedding** (`shed.rs`), when `server.max_in_flight_requests` is set: a request over
//!    the cap is a `503 OVERLOADED` with `Retry-After`, at once; `/healthz` is never shed.
//! 7. **limits** (`limits.rs`): a URI over `server.max_uri_bytes` is a 414, before anything
//!    parses it, and a body framed by a `Transfer-Encoding` other than `chunked` alone a 501; then the path is normalised (`normalize.rs`): unreserved characters decoded,
//!    repeated slashes merged, dot segments resolved (one climbing above the root is a 400), so
//!    routing sees `/%61pi//a/../b` as `/api/b`; and the request has one host (`host.rs`): two
//!    `Host` headers, none over HTTP/1.1, a malformed one, or one that contradicts HTTP/2's
//!    `:authority` is a 400, and HTTP/1.1's absolute form (`GET http://a.example/x`) makes its
//!    authority the `Host`; with `server.allowed_hosts`, a host not among them is a 421 (on the
//!    client listener, not the admin one).
//! 8. **catch panic** (`panic.rs`): a panicking handler is a 500 problem, and the connection and
//!    server live on.
//! 9. CORS (tower-http's layer, which a request without `Origin` skips for the headers it would
//!    get: `cors.rs`), when configured, its preflights answering the methods of the route asked
//!    about (`cors_methods.rs`); then the dispatch (`dispatch.rs`), which finds the route and
//!    attaches its policies to the request context, and per protected route
//!    `Cache-Control: private, no-cache` and `Vary` by the credential, then credentials, access,
//!    limits and shaping.
//!
//! Around them all, `X-Content-Type-Options: nosniff` on every answer, in the request id's layer;
//! and on a client listener that serves TLS, `Strict-Transport-Security` (`hsts.rs`).
//!
//! Each is a [`Filter`](crate::middleware::Filter), the same trait a BFF crate writes its own
//! policies with (a concrete future, no box, the inner service called in place), except the span
//! and the panic catcher: they must be inside every poll of what they wrap, so they are plain
//! tower services. The filters of 3 to 7 are one layer, a tuple of filters: one move of the
//! request and one future, where a layer for each made one of each. tower-http has request-id, trace and
//! catch-panic layers; they were used here first, and cost allocations and copies on every
//! request that these do not: `bench/README.md` has the counts.

pub(crate) mod access_log;
mod context;
mod cors;
mod cors_methods;
mod host;
pub(crate) mod hsts;
mod limits;
mod normalize;
mod panic;
mod problem;
mod request_id;
pub(crate) mod shed;
mod span;

pub(crate) use problem::{ProblemRouter, with_problems};

use std::collections::HashMap;

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::header::X_CONTENT_TYPE_OPTIONS;
use axum::response::Response;
use tower::{Service, ServiceBuilder};
use tower_http::cors::CorsLayer;

use crate::config::Config;
use crate::middleware::{Filter, FilterLayer};
use crate::observe::export::SpanSink;
use crate::observe::metrics::Metrics;
use crate::request::RoutePolicies;
use crate::routes::App;

/// `X-Content-Type-Options: nosniff` on every answer: a browser takes a body for the type it is
/// said to be, never for one it guesses.
#[derive(Debug, Clone, Copy)]
struct NoSniff;

impl Filter for NoSniff {
    type State = ();

    fn on_request(&self, _request: &mut Request) -> Result<(), Response> {
        Ok(())
    }

    fn on_response((): (), response: &mut Response) {
        response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
}

/// What only the client listener has, not the admin one.
pub(crate) struct Front {
    /// The CORS layer and every route pattern's methods, when configured.
    pub(crate) cors: Option<(CorsLayer, HashMap<String, Vec<Method>>)>,
    /// Load shedding, when configured.
    pub(crate) shed: Option<shed::Shed>,
    /// `Strict-Transport-Security`, when the listener serves TLS and `[hsts]` is on.
    pub(crate) hsts: Option<hsts::Hsts>,
}

/// Wraps `routed` (the dispatch to the routes) in the inbound stack of the module docs.
/// `config` gives the server's limits and the tracing settings; `front`, the client listener's
/// own layers (and `server.allowed_hosts` is checked only there).
pub(crate) fn wrap<S>(
    routed: S,
    config: &Config,
    policies: RoutePolicies,
    metrics: Metrics,
    spans: Option<SpanSink>,
    front: Option<Front>,
) -> App
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let hosts = host::OneHost::new(if front.is_some() { &config.server.allowed_hosts } else { &[] });
    let (cors, shed, hsts) = front.map_or((None, None, None), |front| (front.cors, front.shed, front.hsts));
    let (cors, cors_methods) = match cors {
        Some((layer, methods)) => {
            (Some(cors::CorsLayer::new(layer)), Some(FilterLayer(cors_methods::CorsMethods::new(methods))))
        }
        None => (None, None),
    };
    // The filters between the span and the panic catcher, outermost first, in one layer: one move
    // of the request and one future, where a layer for each makes one of each.
    let limits = limits::Limits { max_uri_bytes: config.server.max_uri_bytes };
    let filters = (
        context::Degradations,
        (access_log::AccessLog(metrics), (problem::ProblemDetails, (shed, (limits, (hosts, normalize::Normalize))))),
    );
    let stack = ServiceBuilder::new()
        .layer(FilterLayer((NoSniff, (hsts, request_id::RequestIds))))
        .layer(span::SpanLayer::new(&config.tracing, &config.server.trusted_proxies, spans, policies))
        .layer(FilterLayer(filters))
        .layer(panic::CatchPanicLayer)
        .option_layer(cors_methods)
        .option_layer(cors)
        .service(routed);
    App::new(stack)
}
