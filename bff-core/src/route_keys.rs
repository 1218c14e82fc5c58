//! What a BFF's routes are, asked without running a handler: which route pattern a path takes
//! (to check the `routes."<pattern>"` keys of a config, so a typo stops the process instead of
//! silently leaving a route on the default deadline, and to answer CORS preflights), from a table
//! of the declared patterns matched as the router matches them; and which methods a route
//! answers, asked of its method router once at start-up.

use std::convert::Infallible;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures::FutureExt;
use tower::ServiceExt;

const MATCHED: HeaderName = HeaderName::from_static("x-bff-matched-route");

/// The methods tried on each route.
const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// The declared route patterns, matched as axum's router matches them (both are `matchit`).
pub(crate) struct Patterns(matchit::Router<String>);

impl Patterns {
    /// A table of `patterns` (each once).
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut table = matchit::Router::new();
        for pattern in patterns {
            // The router took these patterns already: a repeat or a conflict is a route declared
            // twice, for other methods.
            let _ = table.insert(pattern, pattern.to_owned());
        }
        Self(table)
    }

    /// The pattern `key` (itself a pattern, its `{param}`s taken literally) resolves to.
    pub(crate) fn matched(&self, key: &str) -> Option<&str> {
        let path = key.replace('{', "%7B").replace('}', "%7D");
        self.0.at(&path).ok().map(|found| found.value.as_str())
    }
}

/// Whether `method` `path` reaches a handler of `probe` (a router whose handlers answer at once).
fn matched(probe: &Router, method: &Method, path: &str) -> Option<String> {
    let request = Request::builder().method(method.clone()).uri(path).body(axum::body::Body::empty()).ok()?;
    // Routing is synchronous and the probe answers at once: the future is ready on first poll.
    let response = probe.clone().oneshot(request).now_or_never()?.ok()?;
    response.headers().get(MATCHED)?.to_str().ok().map(str::to_owned)
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
        let patterns = Patterns::new(["/mobile/home", "/mobile/orders/{id}", "/mobile/orders", "/files/{*rest}"]);
        let matched = |key: &str| patterns.matched(key);
        assert_eq!(matched("/mobile/home"), Some("/mobile/home"));
        assert_eq!(matched("/mobile/orders/{id}"), Some("/mobile/orders/{id}"));
        assert_eq!(matched("/mobile/orders"), Some("/mobile/orders"));
        assert_eq!(matched("/files/{*rest}"), Some("/files/{*rest}"));
        // A differently named parameter takes the route, but is not its pattern.
        assert_eq!(matched("/mobile/orders/{order}"), Some("/mobile/orders/{id}"));
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
