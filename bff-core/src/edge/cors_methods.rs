//! CORS preflights answer the methods of the route asked about, not every method the gateway
//! knows: a browser is told `/web/home` takes `GET` and `HEAD`, and `/web/notifications/read`
//! `POST`. Runs around tower-http's CORS layer, which answers the preflight.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::{ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use super::around::Around;
use crate::route_keys;

/// Rewrites `Access-Control-Allow-Methods` on preflight answers: the route pattern the path
/// takes (asked of `probe`, see `route_keys::probe`), then that route's methods.
#[derive(Clone)]
pub(crate) struct CorsMethods {
    probe: Router,
    methods: Arc<HashMap<String, HeaderValue>>,
}

impl CorsMethods {
    /// For `routed`, whose routes take `methods` (by pattern).
    pub(crate) fn new(routed: &Router, methods: HashMap<String, Vec<Method>>) -> Self {
        let methods = methods
            .into_iter()
            .filter_map(|(pattern, methods)| {
                let listed = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
                Some((pattern, HeaderValue::try_from(listed).ok()?))
            })
            .collect();
        Self { probe: route_keys::probe(routed), methods: Arc::new(methods) }
    }
}

impl Around for CorsMethods {
    /// The methods of a preflight's route, `Some(None)` for a path no declared route takes;
    /// `None` for any request but a preflight.
    type State = Option<Option<HeaderValue>>;

    fn before(&self, request: &mut Request) -> Self::State {
        let headers = request.headers();
        let preflight = request.method() == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return None;
        }
        let pattern = route_keys::pattern_of(&self.probe, request.uri().path());
        Some(pattern.and_then(|p| self.methods.get(&p).cloned()))
    }

    fn after(methods: Self::State, response: &mut Response) {
        let Some(methods) = methods else { return };
        if !response.headers().contains_key(ACCESS_CONTROL_ALLOW_METHODS) {
            return;
        }
        match methods {
            Some(value) => response.headers_mut().insert(ACCESS_CONTROL_ALLOW_METHODS, value),
            // No declared route takes the path: no method is allowed from another origin.
            None => response.headers_mut().remove(ACCESS_CONTROL_ALLOW_METHODS),
        };
    }
}
