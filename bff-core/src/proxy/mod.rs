//! Passthrough routes from config (`[[proxy]]`): a path forwarded to a named upstream with no
//! handler, behind the same edge, credentials, access, limits and outbound stack as a handler's
//! calls, and both bodies streamed (nothing is buffered; a body limit is counted as it streams).
//!
//! - `pattern.rs`: a route's path (a pattern or a `/x/*` prefix), matched on the normalised path,
//!   and its rewrite;
//! - `route.rs`: one compiled route, and the choice among those of one host and path shape by
//!   `match_header` and method;
//! - `table.rs`: finding a request's route: host, then the most specific path, then method (405
//!   with `Allow`);
//! - `path.rs`: the paths refused before anything is forwarded (encoded slashes); a path whose
//!   `..` segments climbed out of the root of the route it was written for is refused when it is
//!   routed (`Proxies::route`);
//! - `headers.rs`: hop-by-hop headers, `X-Forwarded-*`, `Forwarded`, `Via`;
//! - `forward.rs`: the service that forwards;
//! - `tunnel.rs`: a WebSocket, opened over HTTP/1.1 or HTTP/2, its bytes both ways once both sides
//!   have switched protocols.
//!
//! Each route is named by its `path` as written (in metrics, logs, `rate_limits.<n>.routes` and
//! `routes."<path>"`) and has its own access. A route whose paths overlap a handler route's, or two
//! routes no request can tell apart, stop the BFF at start.

mod forward;
mod headers;
mod path;
mod pattern;
mod route;
mod table;
mod tunnel;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

pub(crate) use self::forward::Forward;
use self::forward::Shared;
#[cfg(test)]
pub(crate) use self::path::unsafe_path;
use self::pattern::{Pattern, Rewrite};
use self::route::{Edits, ProxyRoute, Target, request_host};
use self::table::{Found, Table};
use crate::config::{Config, HeaderEdits, HostPattern, ProxyRouteConfig, ProxyUpstream};
use crate::error::BffError;
use crate::identity;
use crate::policy::access::Access;
use crate::request::PathWithDots;
use crate::routes::Route;
use crate::upstream::Upstreams;

/// The passthrough routes of a gateway, and the service that forwards to them.
#[derive(Debug, Clone)]
pub(crate) struct Proxies {
    table: Arc<Table>,
    forward: Forward,
}

/// The methods a route may list, and those a route that lists none takes.
const ANY: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// Why the proxy routes cannot be used: the key at fault and why.
pub(crate) type KeyError = (String, String);

/// What a request is, to the passthrough routes.
pub(crate) enum Routed {
    /// One of theirs: the request carries its route (an extension) for [`Forward`], and here are
    /// its policies.
    Route(Arc<Route>),
    /// Answered here: a path of theirs but not the method (405), or a path whose `..` segments
    /// climbed out of the root of the route it was written for (400); and the policies of that
    /// route, to name it in the metrics.
    Answered(Response, Arc<Route>),
    /// Not one of theirs.
    Elsewhere,
}

impl Proxies {
    /// Compiles `config.proxy` against the configured `upstreams`.
    pub(crate) fn new(config: &Config, upstreams: &Upstreams) -> Result<Self, KeyError> {
        let mut table = Table::default();
        for (index, entry) in config.proxy.iter().enumerate() {
            let route = compile(index, entry, config, upstreams)?;
            table.insert(Arc::new(route)).map_err(|(field, why)| (format!("proxy[{index}]{field}"), why))?;
        }
        let credential = match (&config.auth, &config.api_keys) {
            (Some(_), _) => Some(axum::http::header::AUTHORIZATION),
            (None, Some(keys)) => Some(keys.header.0.clone()),
            (None, None) => None,
        };
        let proto = if config.tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            trusted: config.server.trusted_proxies.clone(),
            proto,
            credential,
            session_cookies: config.session.is_some(),
            idle_timeout: config.server.idle_timeout,
        });
        Ok(Self { table: Arc::new(table), forward: Forward { shared } })
    }

    /// Finds `request`'s route; when there is one, the request carries it for [`Forward`].
    pub(crate) fn route(&self, request: &mut Request) -> Routed {
        // Only a table with routes for a `host` asks for the request's.
        let host = if self.table.by_host() { request_host(request) } else { None };
        if let Some(route) = self.climbed_out(host.as_deref(), request) {
            let why = format!("the path climbs out of the route `{}` with `..`", route.policy.pattern);
            let response = BffError::bad_request("INVALID_PATH", why).into_response();
            return Routed::Answered(response, route.policy.clone());
        }
        let method = tunnel::routing_method(request.method(), request.extensions());
        let found = self.table.find(host.as_deref(), request.uri().path(), request.headers(), method);
        match found {
            Found::Route(route) => {
                let policy = route.policy.clone();
                request.extensions_mut().insert(route.clone());
                Routed::Route(policy)
            }
            Found::MethodNotAllowed(allowed, route) => {
                Routed::Answered(forward::method_not_allowed(&allowed), route.policy.clone())
            }
            Found::Nothing => Routed::Elsewhere,
        }
    }

    /// The route a path with `..` segments would have taken had they not been resolved, if its
    /// resolved path is not under that route's root: `/api/files/../../_stats` is not a file.
    fn climbed_out(&self, host: Option<&str>, request: &Request) -> Option<&Arc<ProxyRoute>> {
        let PathWithDots(written) = request.extensions().get::<PathWithDots>()?;
        let method = tunnel::routing_method(request.method(), request.extensions());
        let route = match self.table.find(host, written, request.headers(), method) {
            Found::Route(route) | Found::MethodNotAllowed(_, route) => route,
            Found::Nothing => return None,
        };
        (!route.pattern.under_root(request.uri().path())).then_some(route)
    }

    /// The service that forwards a request [`route`](Proxies::route) found a route for.
    pub(crate) fn forward(&self) -> Forward {
        self.forward.clone()
    }

    /// Every route's policies, once each.
    pub(crate) fn policies(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.table.routes().map(|route| &route.policy)
    }

    /// Every route's paths as router patterns, with the methods it takes (for CORS preflights).
    pub(crate) fn methods(&self) -> Vec<(String, Vec<Method>)> {
        let mut methods: Vec<(String, Vec<Method>)> = Vec::new();
        for route in self.table.routes() {
            let taken = if route.methods.is_empty() { ANY.to_vec() } else { route.taken() };
            for pattern in route.pattern.router_patterns() {
                match methods.iter_mut().find(|(p, _)| *p == pattern) {
                    Some((_, known)) => {
                        for method in &taken {
                            if !known.contains(method) {
                                known.push(method.clone());
                            }
                        }
                    }
                    None => methods.push((pattern, taken.clone())),
                }
            }
        }
        methods
    }

    /// Fails, naming both, when a proxy route takes a path one of `handlers` (route patterns)
    /// takes.
    pub(crate) fn check_handlers<'a>(&self, handlers: impl IntoIterator<Item = &'a str>) -> Result<(), KeyError> {
        for handler in handlers {
            let Ok(handler_pattern) = Pattern::parse(handler) else { continue };
            let mut routes: Vec<&Arc<ProxyRoute>> = self.table.routes().collect();
            routes.sort_by_key(|route| route.index);
            for route in routes {
                if let Some(path) = route.pattern.overlap(&handler_pattern) {
                    let message = format!(
                        "{} takes paths of the handler route `{handler}` (`{path}`, for one): \
                         a path is served by a handler or forwarded, not both",
                        route.describe()
                    );
                    return Err((format!("proxy[{}].path", route.index), message));
                }
            }
        }
        Ok(())
    }
}

/// One `[[proxy]]` entry, checked.
fn compile(
    index: usize,
    entry: &ProxyRouteConfig,
    config: &Config,
    upstreams: &Upstreams,
) -> Result<ProxyRoute, KeyError> {
    let key = |name: &str| format!("proxy[{index}].{name}");
    let pattern = Pattern::parse(&entry.path).map_err(|m| (key("path"), m))?;
    let named =
        |name: &str| upstreams.get(name).ok_or_else(|| (key("upstream"), format!("there is no `[upstreams.{name}]`")));
    let target = match &entry.upstream {
        ProxyUpstream::One(name) => Target::one(named(name)?),
        ProxyUpstream::Split(weights) => {
            let choices = weights
                .iter()
                .map(|(name, weight)| Ok::<_, KeyError>((named(name)?, *weight)))
                .collect::<Result<_, _>>()?;
            Target::split(choices).ok_or_else(|| {
                (key("upstream"), "a split needs a weight above zero (and weights that add up within 2^32)".to_owned())
            })?
        }
    };
    let mut match_headers = Vec::new();
    for (name, value) in &entry.match_header {
        let at = format!("{}.{name}", key("match_header"));
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| (at.clone(), format!("`{name}` is not a header name")))?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|_| (at, format!("`{value}` is not a header value")))?;
        match_headers.push((header, value));
    }
    let rewrite =
        entry.rewrite.as_deref().map(|r| Rewrite::parse(r, &pattern)).transpose().map_err(|m| (key("rewrite"), m))?;
    let mut methods = Vec::new();
    for name in &entry.methods {
        let method = Method::from_bytes(name.as_bytes()).ok().filter(|m| ANY.contains(m)).ok_or_else(|| {
            (key("methods"), format!("`{name}` is not one of {}", ANY.map(|m| m.to_string()).join(", ")))
        })?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    let host = entry.host.as_deref().map(str::parse::<HostPattern>).transpose().map_err(|m| (key("host"), m))?;
    let allowed = &config.server.allowed_hosts;
    if let Some(host) = &host
        && !allowed.is_empty()
        && !allowed.iter().any(|a| a.overlaps(host))
    {
        let why = format!("`{host}` is not among `server.allowed_hosts`: no request could reach this route");
        return Err((key("host"), why));
    }
    let access = parse_access(&entry.access).map_err(|m| (key("access"), m))?;
    if entry.timeout.is_some_and(|t| t.is_zero()) {
        return Err((key("timeout"), "must be greater than zero".to_owned()));
    }
    let in_flight = match entry.max_in_flight {
        Some(0) => return Err((key("max_in_flight"), "must be at least 1".to_owned())),
        Some(n) if n > tokio::sync::Semaphore::MAX_PERMITS => {
            return Err((key("max_in_flight"), format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS)));
        }
        Some(n) => Some(tokio::sync::Semaphore::new(n)),
        None => None,
    };
    if entry.forward_token {
        let why = match (&config.session, &config.auth) {
            _ if access.is_public() => Some("a public route has no caller whose token to forward"),
            (None, None) => Some("there is no token to forward without `[session]` or `[auth]`"),
            _ => None,
        };
        if let Some(why) = why {
            return Err((key("forward_token"), why.to_owned()));
        }
    }
    let settings = config.routes.get(&entry.path);
    let policy = Arc::new(Route {
        pattern: Arc::from(entry.path.as_str()),
        access,
        deadline: settings.and_then(|s| s.deadline),
        max_body_bytes: settings.and_then(|s| s.max_body_bytes),
        shaped: false,
    });
    Ok(ProxyRoute {
        index,
        pattern,
        methods,
        host,
        match_headers,
        target,
        rewrite,
        policy,
        timeout: entry.timeout,
        max_body_bytes: entry.max_body_bytes,
        in_flight,
        websocket: entry.websocket,
        forward_token: entry.forward_token,
        request_headers: edits(&entry.request_headers, &key("request_headers"))?,
        response_headers: edits(&entry.response_headers, &key("response_headers"))?,
    })
}

/// `public`, `authenticated` or `scope:<name>`.
fn parse_access(access: &str) -> Result<Access, String> {
    match access {
        "public" => Ok(Access::public()),
        "authenticated" => Ok(Access::authenticated()),
        _ => match access.strip_prefix("scope:") {
            Some(scope) if !scope.is_empty() && !scope.contains(char::is_whitespace) => Ok(Access::scope(scope)),
            _ => Err(format!("`{access}`: say `public`, `authenticated` or `scope:<name>`")),
        },
    }
}

fn edits(config: &HeaderEdits, key: &str) -> Result<Edits, KeyError> {
    let name = |n: &str, at: String| {
        let name =
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| (at.clone(), format!("`{n}` is not a header name")))?;
        if identity::NAMES.contains(&name) {
            return Err((at, format!("`{name}` is set by the gateway from the verified caller")));
        }
        Ok(name)
    };
    let mut edits = Edits::default();
    for (n, value) in &config.set {
        let at = format!("{key}.set.{n}");
        let header = name(n, at.clone())?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|_| (at, format!("`{value}` is not a header value")))?;
        edits.set.push((header, value));
    }
    for n in &config.remove {
        edits.remove.push(name(n, format!("{key}.remove"))?);
    }
    Ok(edits)
}

#[cfg(test)]
mod tests;
