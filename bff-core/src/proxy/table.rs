//! Finding a request's passthrough route: host first, then the most specific path, then the
//! method.
//!
//! Routes are grouped by the host they take: one group per exact name, one per wildcard, and one
//! for the routes without a `host`. A request tries the group of its exact host, then the
//! wildcards that take it (the longer suffix first), then the routes of any host; within a group
//! the most specific path wins: paths of fixed length before prefixes and `{*rest}`s, and within
//! each `matchit`'s order (a literal before a parameter, the longer match first), and among the routes of that path the one whose `match_header` the request carries, and
//! whose methods include its own. A path some group takes with no route for the method is a 405
//! naming every method that would have been served.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method};

use super::route::{Choice, ProxyRoute, choose};
use crate::config::{HostPattern, takes_suffix};

/// The routes of one host spec: routers of path shapes, each with its routes.
#[derive(Debug, Default)]
struct Paths {
    /// Paths of fixed length (literals and parameters), then those that take any number of
    /// segments (prefixes, `{*rest}`): so a template is tried before a catch-all whatever their
    /// literal parts, and the two can share a position (`/files/{id}` beside `/files/*`).
    routers: [matchit::Router<usize>; 2],
    /// By the index the router gives.
    shapes: Vec<Vec<Arc<ProxyRoute>>>,
    /// The index of each shape.
    by_shape: HashMap<String, usize>,
    /// Which route's pattern each router entry was inserted for, for conflict messages.
    inserted_by: HashMap<String, String>,
}

/// Every passthrough route, by host.
#[derive(Debug, Default)]
pub(crate) struct Table {
    exact: HashMap<String, Paths>,
    /// By suffix (`.example.com`), the longest first.
    wildcard: Vec<(String, Paths)>,
    any: Paths,
}

/// What the table holds for a request.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    Route(&'a Arc<ProxyRoute>),
    /// Routes take its host and path, none its method: the methods they take, and one of them
    /// (to name the route in the metrics of the 405).
    MethodNotAllowed(Vec<Method>, &'a Arc<ProxyRoute>),
    /// No route takes it: a handler route may.
    Nothing,
}

impl Table {
    /// Adds `route`; fails, naming both, when no request can tell it from a route added before
    /// (`("", why)`) or the router cannot hold both paths (`(".path", why)`); the table is then
    /// as it was.
    pub(crate) fn insert(&mut self, route: Arc<ProxyRoute>) -> Result<(), (&'static str, String)> {
        let paths = match &route.host {
            None => &mut self.any,
            Some(HostPattern::Exact(name)) => self.exact.entry(name.clone()).or_default(),
            Some(HostPattern::Wildcard(suffix)) => match self.wildcard.iter().position(|(s, _)| s == suffix) {
                Some(at) => &mut self.wildcard[at].1,
                None => {
                    self.wildcard.push((suffix.clone(), Paths::default()));
                    self.wildcard.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then(a.cmp(b)));
                    let at = self.wildcard.iter().position(|(s, _)| s == suffix).unwrap_or_default();
                    &mut self.wildcard[at].1
                }
            },
        };
        paths.insert(route)
    }

    /// Whether any route names a host (else the request's is not looked at).
    pub(crate) fn by_host(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// The route of a request for `path` (normalised) on `host` (lowercase, no port).
    pub(crate) fn find(&self, host: Option<&str>, path: &str, headers: &HeaderMap, method: &Method) -> Found<'_> {
        let exact = host.and_then(|h| self.exact.get(h));
        let wildcards = self
            .wildcard
            .iter()
            .filter(move |(suffix, _)| host.is_some_and(|h| takes_suffix(suffix.as_bytes(), h.as_bytes())))
            .map(|(_, paths)| paths);
        let mut allowed: Vec<Method> = Vec::new();
        let mut named: Option<&Arc<ProxyRoute>> = None;
        for paths in exact.into_iter().chain(wildcards).chain([&self.any]) {
            let Some(matched) = paths.routers.iter().find_map(|router| router.at(path).ok()) else { continue };
            let routes = &paths.shapes[*matched.value];
            match choose(routes, headers, method) {
                Choice::Route(route) => return Found::Route(route),
                Choice::MethodNotAllowed(methods) => {
                    named = named.or(routes.first());
                    for m in methods {
                        if !allowed.contains(&m) {
                            allowed.push(m);
                        }
                    }
                }
                Choice::NotFound => {}
            }
        }
        match named {
            Some(route) => Found::MethodNotAllowed(allowed, route),
            None => Found::Nothing,
        }
    }

    /// Every route, in no particular order.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Arc<ProxyRoute>> {
        let groups = self.exact.values().chain(self.wildcard.iter().map(|(_, p)| p)).chain([&self.any]);
        groups.flat_map(|paths| paths.shapes.iter().flatten())
    }
}

impl Paths {
    fn insert(&mut self, route: Arc<ProxyRoute>) -> Result<(), (&'static str, String)> {
        let shape = route.pattern.shape();
        if let Some(&at) = self.by_shape.get(&shape) {
            for other in &self.shapes[at] {
                if let Some(why) = route.ambiguous_with(other) {
                    return Err(("", why));
                }
            }
            self.shapes[at].push(route);
            return Ok(());
        }
        let at = self.shapes.len();
        let slot = usize::from(route.pattern.is_catch_all());
        // Into a copy: a prefix inserts two patterns, and both go in or neither.
        let mut router = self.routers[slot].clone();
        let patterns = route.pattern.router_patterns();
        for pattern in &patterns {
            if let Err(error) = router.insert(pattern, at) {
                let other = match &error {
                    matchit::InsertError::Conflict { with } => self.inserted_by.get(with).cloned(),
                    _ => None,
                }
                .unwrap_or_else(|| "another route".to_owned());
                return Err((".path", format!("{} cannot be routed beside {other}: {error}", route.describe())));
            }
        }
        self.routers[slot] = router;
        for pattern in patterns {
            self.inserted_by.insert(pattern, route.describe());
        }
        self.by_shape.insert(shape, at);
        self.shapes.push(vec![route]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::test_route;

    fn table(routes: &[(&str, Option<&str>, &[Method])]) -> Table {
        let mut table = Table::default();
        for (index, (path, host, methods)) in routes.iter().enumerate() {
            table.insert(test_route(index, path, *host, methods)).unwrap();
        }
        table
    }

    fn found(table: &Table, host: Option<&str>, path: &str, method: Method) -> Result<usize, Vec<Method>> {
        match table.find(host, path, &HeaderMap::new(), &method) {
            Found::Route(route) => Ok(route.index),
            Found::MethodNotAllowed(allowed, _) => Err(allowed),
            Found::Nothing => Err(vec![]),
        }
    }

    #[test]
    fn the_host_comes_first_then_the_most_specific_path_then_the_method() {
        let table = table(&[
            ("/api/{*rest}", None, &[Method::GET]),
            ("/api/products/{sku}", None, &[Method::GET]),
            ("/api/products/top", None, &[Method::GET]),
            ("/api/*", Some("*.example.com"), &[Method::GET]),
            ("/api/*", Some("api.example.com"), &[Method::GET]),
            ("/api/*", Some("api.example.com"), &[Method::PUT]),
            ("/legacy/*", None, &[]),
        ]);
        // Any host: exact before template before catch-all.
        assert_eq!(found(&table, None, "/api/products/top", Method::GET), Ok(2));
        assert_eq!(found(&table, None, "/api/products/SKU-1", Method::GET), Ok(1));
        assert_eq!(found(&table, None, "/api/orders/1", Method::GET), Ok(0));
        // A route of the request's host wins over more specific paths of any host.
        assert_eq!(found(&table, Some("api.example.com"), "/api/products/top", Method::GET), Ok(4));
        assert_eq!(found(&table, Some("api.example.com"), "/api/products/top", Method::PUT), Ok(5));
        assert_eq!(found(&table, Some("www.example.com"), "/api/products/top", Method::GET), Ok(3));
        assert_eq!(found(&table, Some("www.example.com"), "/api", Method::GET), Ok(3), "a prefix takes its base");
        assert_eq!(found(&table, Some("a.b.example.com"), "/api/products/top", Method::GET), Ok(2), "one label");
        assert_eq!(found(&table, Some("other.test"), "/api/x", Method::GET), Ok(0));
        // A method no route of the path takes, whatever the host: 405 naming every one that would do.
        let allowed = found(&table, Some("api.example.com"), "/api/x", Method::DELETE).unwrap_err();
        assert_eq!(allowed, vec![Method::GET, Method::HEAD, Method::PUT]);
        assert_eq!(found(&table, Some("api.example.com"), "/legacy/x", Method::DELETE), Ok(6));
        assert_eq!(found(&table, None, "/other", Method::GET), Err(vec![]), "no route: a handler's, maybe");
    }

    #[test]
    fn a_host_route_takes_only_its_host() {
        let table = table(&[("/admin/*", Some("admin.example.com"), &[])]);
        assert!(table.by_host());
        assert_eq!(found(&table, Some("admin.example.com"), "/admin/x", Method::GET), Ok(0));
        assert_eq!(found(&table, Some("www.example.com"), "/admin/x", Method::GET), Err(vec![]));
        assert_eq!(found(&table, None, "/admin/x", Method::GET), Err(vec![]));
    }

    #[test]
    fn routes_the_router_cannot_tell_apart_are_named() {
        let mut table = Table::default();
        table.insert(test_route(0, "/files/{id}", None, &[])).unwrap();
        let (field, why) = table.insert(test_route(1, "/files/{name}", None, &[Method::GET])).unwrap_err();
        assert_eq!(field, "");
        assert!(why.contains("`/files/{id}` (proxy[0])") && why.contains("`/files/{name}` (proxy[1])"), "{why}");
        // Told apart by host, by a longer path, or as a catch-all tried after the templates.
        table.insert(test_route(2, "/files/{name}", Some("a.test"), &[Method::GET])).unwrap();
        table.insert(test_route(3, "/files/{name}/meta", None, &[])).unwrap();
        table.insert(test_route(4, "/files/*", None, &[])).unwrap();
        assert_eq!(found(&table, None, "/files/1", Method::GET), Ok(0));
        assert_eq!(found(&table, None, "/files/1/meta", Method::GET), Ok(3));
        assert_eq!(found(&table, None, "/files/1/2", Method::GET), Ok(4));
        assert_eq!(found(&table, None, "/files", Method::GET), Ok(4));
        // A parameter and a catch-all at one position, both taking any number of segments.
        let (field, why) = table.insert(test_route(5, "/files/{id}/{*rest}", None, &[])).unwrap_err();
        assert_eq!(field, ".path");
        assert!(why.contains("`/files/{id}/{*rest}` (proxy[5])") && why.contains("`/files/*` (proxy[4])"), "{why}");
        assert_eq!(table.routes().count(), 4);
        // A prefix whose base fits but whose catch-all does not leaves nothing behind.
        let mut table = Table::default();
        table.insert(test_route(0, "/x/{id}/{*rest}", None, &[])).unwrap();
        assert!(table.insert(test_route(1, "/x/*", None, &[])).is_err());
        assert_eq!(found(&table, None, "/x", Method::GET), Err(vec![]), "no half-inserted base");
    }
}
