//! The inbound stack around every route, one concern per layer, outermost first:
//!
//! 1. **request id** (tower-http `SetRequestId` + `PropagateRequestId`; `request_id.rs` decides
//!    which client ids are kept): every request has an `X-Request-Id`, echoed on the response.
//! 2. **trace span** (tower-http `Trace`): one `request` span with the id, method and path, around
//!    everything inside.
//! 3. **access log + metrics** (`access_log.rs`): one log line and the request series per
//!    request, with the matched route, status, latency, error code and degradations.
//! 4. **problem details** (`problem.rs`): problem+json bodies get the request id; axum's bare 405
//!    becomes one.
//! 5. **request context** (`context.rs`): the deadline clock and the degradations list a handler's
//!    [`Ctx`](crate::Ctx) reads; `X-Bff-Degraded` on the way out.
//! 6. **catch panic** (tower-http `CatchPanic`, `panic.rs`): a panicking handler is a 500 problem,
//!    and the connection and server live on.
//! 7. CORS (tower-http), when configured; then routing, and per route: authentication, shaping.

pub(crate) mod access_log;
mod around;
mod context;
mod panic;
mod problem;
mod request_id;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::around::AroundLayer;
use crate::observe::metrics::Metrics;
use crate::request::{REQUEST_ID_HEADER, RoutePolicies};

/// Wraps the routed router `routed` in the inbound stack of the module docs.
pub(crate) fn wrap(routed: Router, policies: RoutePolicies, metrics: Metrics, cors: Option<CorsLayer>) -> Router {
    let request_id = REQUEST_ID_HEADER;
    let inner = ServiceBuilder::new()
        .layer(AroundLayer(problem::ProblemDetails))
        .layer(AroundLayer(context::Context(policies)))
        .map_response(|response: axum::http::Response<_>| response.map(Body::new))
        .layer(CatchPanicLayer::custom(panic::internal_error))
        .option_layer(cors)
        .service(routed);
    let stack = ServiceBuilder::new()
        .map_request(request_id::drop_unacceptable)
        .layer(SetRequestIdLayer::new(request_id.clone(), request_id::NewUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(TraceLayer::new_for_http().make_span_with(span).on_request(()).on_response(()).on_failure(()))
        .map_response(|response: axum::http::Response<_>| response.map(Body::new))
        .layer(AroundLayer(access_log::AccessLog(metrics)))
        .service(inner);
    Router::new().fallback_service(stack)
}

/// The `request` span: the id (set by the layer outside), the method and the path.
fn span(request: &Request) -> tracing::Span {
    let id = request.headers().get(&REQUEST_ID_HEADER).map(|id| String::from_utf8_lossy(id.as_bytes()));
    tracing::info_span!(
        "request",
        id = %id.unwrap_or_default(),
        method = %request.method(),
        path = %request.uri().path(),
    )
}
