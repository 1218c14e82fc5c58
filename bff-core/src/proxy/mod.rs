//! Passthrough routes from config (`[[proxy]]`): a path forwarded to a named upstream with no
//! handler, behind the same edge, credentials, access, limits and outbound stack as a handler's
//! calls, and both bodies streamed (nothing is buffered; a body limit is counted as it streams).
//!
//! - `pattern.rs`: a route's path (a pattern or a `/x/*` prefix), matched on the raw path, and
//!   its rewrite;
//! - `route.rs`: one compiled route, and the choice among those of one path shape by host, then
//!   method (405 with `Allow`);
//! - `path.rs`: the paths refused before anything is forwarded (dot segments, encoded slashes);
//! - `headers.rs`: hop-by-hop headers, `X-Forwarded-*`, `Forwarded`, `Via`;
//! - `forward.rs`: the service that forwards;
//! - `tunnel.rs`: a WebSocket's bytes both ways, once both sides have switched protocols.
//!
//! Routes of one path shape (the same pattern up to its parameters' names) share one entry in the
//! BFF's router, and so one access: they differ by host or method. A route whose paths overlap a
//! handler route's, or two routes no request can tell apart, stop the BFF at start.

mod forward;
mod headers;
mod path;
mod pattern;
mod route;
mod tunnel;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::MethodFilter;

use self::forward::{Forward, Shared};
use self::pattern::{Pattern, Rewrite};
use self::route::{Edits, Host, ProxyRoute, Target};
use crate::config::{Config, HeaderEdits, ProxyRouteConfig, ProxyUpstream};
use crate::identity;
use crate::policy::access::Access;
use crate::routes::Routes;
use crate::upstream::Upstreams;

/// The passthrough routes of a gateway, grouped by path shape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies {
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    /// The patterns the router gets (two for a prefix).
    patterns: Vec<String>,
    access: Access,
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

impl Proxies {
    /// Compiles `config.proxy` against the configured `upstreams`.
    pub(crate) fn new(config: &Config, upstreams: &Upstreams) -> Result<Self, KeyError> {
        let mut by_shape: BTreeMap<String, Vec<Arc<ProxyRoute>>> = BTreeMap::new();
        for (index, entry) in config.proxy.iter().enumerate() {
            let route = Arc::new(compile(index, entry, upstreams)?);
            let group = by_shape.entry(route.pattern.shape()).or_default();
            for other in group.iter() {
                if let Some(why) = route.ambiguous_with(other) {
                    return Err((format!("proxy[{index}]"), why));
                }
                if other.access != route.access {
                    let message = format!(
                        "{} and {} take the same paths, so they need the same `access`",
                        other.describe(),
                        route.describe()
                    );
                    return Err((format!("proxy[{index}].access"), message));
                }
            }
            group.push(route);
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
            idle_timeout: config.server.idle_timeout,
        });
        let groups = by_shape
            .into_values()
            .map(|routes| Group {
                patterns: routes[0].pattern.router_patterns(),
                access: routes[0].access.clone(),
                forward: Forward { routes: routes.into(), shared: shared.clone() },
            })
            .collect();
        Ok(Self { groups })
    }

    /// The patterns the router gets for them.
    pub(crate) fn patterns(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flat_map(|g| g.patterns.iter().map(String::as_str))
    }

    /// Fails, naming both, when a proxy route takes a path one of `handlers` (route patterns)
    /// takes.
    pub(crate) fn check_handlers<'a>(&self, handlers: impl IntoIterator<Item = &'a str>) -> Result<(), KeyError> {
        for handler in handlers {
            let Ok(handler_pattern) = Pattern::parse(handler) else { continue };
            for route in self.groups.iter().flat_map(|g| g.forward.routes.iter()) {
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

    /// `routes` with every proxy route added, under the methods its routes take (any of them
    /// when one takes any).
    pub(crate) fn add_to(&self, mut routes: Routes) -> Routes {
        for group in &self.groups {
            let mut filter: Option<MethodFilter> = None;
            for route in group.forward.routes.iter() {
                let methods: Vec<Method> = if route.methods.is_empty() { ANY.to_vec() } else { route.methods.clone() };
                for method in methods {
                    // Every method was checked to have a filter when the route was compiled.
                    if let Ok(one) = MethodFilter::try_from(method) {
                        filter = Some(filter.map_or(one, |f| f.or(one)));
                    }
                }
            }
            let Some(filter) = filter else { continue };
            for pattern in &group.patterns {
                let service = axum::routing::on_service(filter, group.forward.clone());
                routes = routes.route(pattern, service, group.access.clone());
            }
        }
        routes
    }
}

/// One `[[proxy]]` entry, checked.
fn compile(index: usize, entry: &ProxyRouteConfig, upstreams: &Upstreams) -> Result<ProxyRoute, KeyError> {
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
    let host = entry.host.as_deref().map(Host::parse).transpose().map_err(|m| (key("host"), m))?;
    let access = parse_access(&entry.access).map_err(|m| (key("access"), m))?;
    if entry.timeout.is_some_and(|t| t.is_zero()) {
        return Err((key("timeout"), "must be greater than zero".to_owned()));
    }
    Ok(ProxyRoute {
        index,
        pattern,
        methods,
        host,
        match_headers,
        target,
        rewrite,
        access,
        timeout: entry.timeout,
        max_body_bytes: entry.max_body_bytes,
        websocket: entry.websocket,
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
