//! CORS preflights answer the methods of the route asked about, not every method the gateway
//! knows: a browser is told `/web/home` takes `GET` and `HEAD`, and `/web/notifications/read`
//! `POST`. Runs around tower-http's CORS layer, which answers the preflight.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use crate::middleware::Filter;

/// Rewrites `Access-Control-Allow-Methods` on preflight answers: the route the path takes, found
/// in tables of the route patterns (matched as the routes are, built once), then that route's
/// methods.
#[derive(Clone)]
pub(crate) struct CorsMethods {
    /// Patterns of fixed length, then those ending in a catch-all (`{*rest}`), tried in that
    /// order as passthrough routes are (`proxy/table.rs`), so both may share a position.
    tables: Arc<[matchit::Router<HeaderValue>; 2]>,
}

impl CorsMethods {
    /// For routes that take `methods` (by pattern).
    pub(crate) fn new(methods: HashMap<String, Vec<Method>>) -> Self {
        let mut tables = [matchit::Router::new(), matchit::Router::new()];
        for (pattern, methods) in methods {
            let listed = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
            if let Ok(value) = HeaderValue::try_from(listed) {
                // The routers took these patterns already: none conflicts.
                let _ = tables[usize::from(pattern.contains("{*"))].insert(pattern, value);
            }
        }
        Self { tables: Arc::new(tables) }
    }
}

impl Filter for CorsMethods {
    /// The methods of a preflight's route, `Some(None)` for a path no declared route takes;
    /// `None` for any request but a preflight.
    type State = Option<Option<HeaderValue>>;

    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
        let headers = request.headers();
        let preflight = request.method() == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return Ok(None);
        }
        let path = request.uri().path();
        Ok(Some(self.tables.iter().find_map(|table| table.at(path).ok()).map(|found| found.value.clone())))
    }

    fn on_response(methods: Self::State, response: &mut Response) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight(cors: &CorsMethods, path: &str) -> Option<HeaderValue> {
        let mut request = Request::builder()
            .method(Method::OPTIONS)
            .uri(path)
            .header(ORIGIN, "https://app.example.com")
            .header(ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(axum::body::Body::empty())
            .unwrap();
        cors.on_request(&mut request).ok().flatten().expect("a preflight")
    }

    #[test]
    fn a_preflight_gets_the_methods_of_the_route_its_path_takes() {
        let methods = [
            ("/files/{p1}".to_owned(), vec![Method::GET, Method::HEAD]),
            ("/files/{*rest}".to_owned(), vec![Method::PUT]),
            ("/web/home".to_owned(), vec![Method::GET]),
        ];
        let cors = CorsMethods::new(methods.into_iter().collect());
        assert_eq!(preflight(&cors, "/files/1").unwrap(), "GET,HEAD");
        assert_eq!(preflight(&cors, "/files/1/2").unwrap(), "PUT", "the catch-all, beside the parameter");
        assert_eq!(preflight(&cors, "/web/home").unwrap(), "GET");
        assert_eq!(preflight(&cors, "/web/other"), None);
    }
}
