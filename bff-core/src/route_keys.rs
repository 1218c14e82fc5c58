//! Asks a BFF's router what it has, without running a handler: which route pattern a path takes
//! (to check the `routes."<pattern>"` keys of a config, so a typo stops the process instead of
//! silently leaving a route on the default deadline), and which methods a path answers (for CORS
//! preflights).
//!
//! The router itself is asked: a path (a key's `{param}`s percent-encoded, so they match
//! themselves) goes through a copy of the router whose every route answers with its matched
//! pattern instead of calling the handler.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures::FutureExt;
use tower::ServiceExt;

const MATCHED: HeaderName = HeaderName::from_static("x-bff-matched-route");

/// The methods tried on each key: a route may answer only some of them.
const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// A copy of `routes` whose every route answers at once with its matched pattern.
pub(crate) fn probe(routes: &Router) -> Router {
    routes.clone().route_layer(tower::layer::layer_fn(|_handler| {
        tower::service_fn(|request: Request| async move {
            let mut response = ().into_response();
            if let Some(matched) = request.extensions().get::<MatchedPath>()
                && let Ok(value) = HeaderValue::from_str(matched.as_str())
            {
                response.headers_mut().insert(MATCHED, value);
            }
            Ok::<Response, Infallible>(response)
        })
    }))
}

/// The pattern `method path` takes in `probe`, if any route takes it.
fn matched(probe: &Router, method: &Method, path: &str) -> Option<String> {
    let request = Request::builder().method(method.clone()).uri(path).body(axum::body::Body::empty()).ok()?;
    // Routing is synchronous and the probe answers at once: the future is ready on first poll.
    let response = probe.clone().oneshot(request).now_or_never()?.ok()?;
    response.headers().get(MATCHED)?.to_str().ok().map(str::to_owned)
}

/// The pattern a request `path` takes in `probe`, if any route takes it.
pub(crate) fn pattern_of(probe: &Router, path: &str) -> Option<String> {
    METHODS.iter().find_map(|method| matched(probe, method, path))
}

/// The pattern `key` resolves to in `routes`, if any route takes it.
pub(crate) fn matched_pattern(routes: &Router, key: &str) -> Option<String> {
    let path = key.replace('{', "%7B").replace('}', "%7D");
    let probe = probe(routes);
    METHODS.iter().find_map(|method| matched(&probe, method, &path))
}

/// The methods `method_router` answers (`HEAD` with `GET`), asked without running a handler: the
/// probe wraps its handlers only, not its "405 Method Not Allowed" fallback.
pub(crate) fn methods(method_router: &MethodRouter) -> Vec<Method> {
    let probed = method_router.clone().route_layer(tower::layer::layer_fn(|_handler| {
        tower::service_fn(|_: Request| async move {
            let mut response = ().into_response();
            response.headers_mut().insert(MATCHED, HeaderValue::from_static("/"));
            Ok::<Response, Infallible>(response)
        })
    }));
    let probe = Router::new().route("/", probed);
    let mut methods: Vec<Method> = Vec::new();
    for method in METHODS.iter().filter(|m| **m != Method::OPTIONS) {
        if matched(&probe, method, "/").is_some() {
            if *method == Method::GET {
                methods.push(Method::HEAD);
            }
            methods.push(method.clone());
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};

    use super::*;

    #[test]
    fn keys_resolve_to_their_own_pattern_or_to_nothing() {
        let routes: Router = Router::new()
            .route("/mobile/home", get(|| async { "home" }))
            .route("/mobile/orders/{id}", get(|| async { "order" }))
            .route("/mobile/orders", post(|| async { "placed" }))
            .route("/files/{*rest}", get(|| async { "file" }));
        let matched = |key: &str| matched_pattern(&routes, key);
        assert_eq!(matched("/mobile/home").as_deref(), Some("/mobile/home"));
        assert_eq!(matched("/mobile/orders/{id}").as_deref(), Some("/mobile/orders/{id}"));
        assert_eq!(matched("/mobile/orders").as_deref(), Some("/mobile/orders"), "a POST-only route");
        assert_eq!(matched("/files/{*rest}").as_deref(), Some("/files/{*rest}"));
        // A differently named parameter takes the route, but is not its pattern.
        assert_eq!(matched("/mobile/orders/{order}").as_deref(), Some("/mobile/orders/{id}"));
        assert_eq!(matched("/mobile/hom"), None);
        assert_eq!(matched("/"), None);
    }

    #[test]
    fn a_method_routers_methods_are_found_without_running_a_handler() {
        async fn never() -> &'static str {
            panic!("a handler ran")
        }
        assert_eq!(methods(&get(never)), vec![Method::HEAD, Method::GET]);
        assert_eq!(methods(&post(never).delete(never)), vec![Method::POST, Method::DELETE]);
    }
}
