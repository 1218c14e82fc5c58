//! CORS preflights answer the methods of the route asked about, not every method the gateway
//! knows: a browser is told `/web/home` takes `GET` and `HEAD`, and `/web/notifications/read`
//! `POST`. Runs around tower-http's CORS layer, which answers the preflight.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use super::around::Around;

/// Rewrites `Access-Control-Allow-Methods` on preflight answers: the route the path takes, found
/// in a table of the route patterns (matched as the router matches them, built once), then that
/// route's methods.
#[derive(Clone)]
pub(crate) struct CorsMethods {
    table: Arc<matchit::Router<HeaderValue>>,
}

impl CorsMethods {
    /// For routes that take `methods` (by pattern).
    pub(crate) fn new(methods: HashMap<String, Vec<Method>>) -> Self {
        let mut table = matchit::Router::new();
        for (pattern, methods) in methods {
            let listed = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
            if let Ok(value) = HeaderValue::try_from(listed) {
                // The router took these patterns already: none conflicts.
                let _ = table.insert(pattern, value);
            }
        }
        Self { table: Arc::new(table) }
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
        Some(self.table.at(request.uri().path()).ok().map(|found| found.value.clone()))
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
