//! Checks the `routes."<pattern>"` keys of a config against the routes a BFF actually has, so a
//! typo stops the process instead of silently leaving a route on the default deadline.
//!
//! The router itself is asked: each key is sent as a request path (its `{param}`s percent-encoded,
//! so they match themselves) through a copy of the router whose every route answers with its
//! matched pattern instead of calling the handler. No handler runs.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tower::ServiceExt;

const MATCHED: HeaderName = HeaderName::from_static("x-bff-matched-route");

/// The methods tried on each key: a route may answer only some of them.
const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// The pattern `key` resolves to in `routes`, if any route takes it.
pub(crate) fn matched_pattern(routes: &Router, key: &str) -> Option<String> {
    let path = key.replace('{', "%7B").replace('}', "%7D");
    let probe = routes.clone().route_layer(tower::layer::layer_fn(|_handler| {
        tower::service_fn(|request: Request| async move {
            let mut response = ().into_response();
            if let Some(matched) = request.extensions().get::<MatchedPath>()
                && let Ok(value) = HeaderValue::from_str(matched.as_str())
            {
                response.headers_mut().insert(MATCHED, value);
            }
            Ok::<Response, Infallible>(response)
        })
    }));
    METHODS.iter().find_map(|method| {
        let request =
            Request::builder().method(method.clone()).uri(path.as_str()).body(axum::body::Body::empty()).ok()?;
        // Routing is synchronous and the probe answers at once: the future is ready on first poll.
        let response = probe.clone().oneshot(request).now_or_never()?.ok()?;
        response.headers().get(MATCHED)?.to_str().ok().map(str::to_owned)
    })
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
}
