//! One compiled passthrough route, and the choice among the routes of one host and path shape:
//! by `match_header`, then by method.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::pattern::{Pattern, Rewrite};
use crate::config::HostPattern;
use crate::routes::Route;
use crate::upstream::Upstream;

/// A `[[proxy]]` entry, checked and ready to serve.
#[derive(Debug)]
pub(crate) struct ProxyRoute {
    /// Its position in `[[proxy]]`, for messages (`proxy[2]`).
    pub(crate) index: usize,
    pub(crate) pattern: Pattern,
    /// As listed; empty: any. A route that lists `GET` takes `HEAD` too ([`ProxyRoute::taken`]).
    pub(crate) methods: Vec<Method>,
    pub(crate) host: Option<HostPattern>,
    /// Headers the request must carry with these values.
    pub(crate) match_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) target: Target,
    pub(crate) rewrite: Option<Rewrite>,
    /// Its policies (its access, its `routes."<path>"` settings), attached to each request it takes.
    pub(crate) policy: Arc<Route>,
    /// The longest wait for the response head; `None`: the route's deadline.
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) max_body_bytes: Option<u64>,
    /// The places of `max_in_flight`, when the route has one.
    pub(crate) in_flight: Option<tokio::sync::Semaphore>,
    /// Whether WebSocket upgrades are tunnelled.
    pub(crate) websocket: bool,
    /// Whether the caller's access token goes upstream.
    pub(crate) forward_token: bool,
    pub(crate) request_headers: Edits,
    pub(crate) response_headers: Edits,
}

/// Headers set and removed on one side.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

impl Edits {
    pub(crate) fn apply(&self, headers: &mut axum::http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Where a route sends a request: one upstream, or one of several in proportion to weights.
#[derive(Debug)]
pub(crate) struct Target {
    choices: Vec<(Upstream, u32)>,
    total: u32,
}

impl Target {
    pub(crate) fn one(upstream: Upstream) -> Self {
        Self { choices: vec![(upstream, 1)], total: 1 }
    }

    /// Upstreams with their weights; `None` when every weight is zero (or they overflow).
    pub(crate) fn split(choices: Vec<(Upstream, u32)>) -> Option<Self> {
        let total = choices.iter().try_fold(0_u32, |sum, (_, w)| sum.checked_add(*w))?;
        (total > 0).then_some(Self { choices, total })
    }

    /// The upstream of this request.
    pub(crate) fn pick(&self) -> &Upstream {
        self.pick_at(if self.choices.len() == 1 { 0 } else { fastrand::u32(..self.total) })
    }

    /// The upstream a roll in `0..total` lands on.
    fn pick_at(&self, mut roll: u32) -> &Upstream {
        for (upstream, weight) in &self.choices {
            if roll < *weight {
                return upstream;
            }
            roll -= weight;
        }
        &self.choices[self.choices.len() - 1].0
    }
}

/// The name of a request's host ([`crate::request::host_name`]), lowercase.
pub(crate) fn request_host(request: &axum::extract::Request) -> Option<String> {
    crate::request::host_name(request.headers(), request.uri()).map(str::to_ascii_lowercase)
}

impl ProxyRoute {
    /// Whether `headers` carry every header the route requires.
    fn takes_headers(&self, headers: &HeaderMap) -> bool {
        self.match_headers.iter().all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
    }

    /// How the route takes `method`, if it does: as listed (or by listing none), or `HEAD` by
    /// listing `GET`, as a handler route's `GET` does and as RFC 9110 §9.1 asks of every server.
    fn takes_method(&self, method: &Method) -> Option<Taken> {
        if self.methods.is_empty() || self.methods.contains(method) {
            Some(Taken::Listed)
        } else if *method == Method::HEAD && self.methods.contains(&Method::GET) {
            Some(Taken::HeadWithGet)
        } else {
            None
        }
    }

    /// The methods the route takes: those listed, `HEAD` after `GET` when only `GET` is; empty:
    /// any.
    pub(crate) fn taken(&self) -> Vec<Method> {
        let mut taken = Vec::with_capacity(self.methods.len() + 1);
        for method in &self.methods {
            taken.push(method.clone());
            if *method == Method::GET && !self.methods.contains(&Method::HEAD) {
                taken.push(Method::HEAD);
            }
        }
        taken
    }

    /// How it is named in messages: its path, host and methods, and its place in the config.
    pub(crate) fn describe(&self) -> String {
        let host = self.host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default();
        format!("`{}`{host} (proxy[{}])", self.pattern, self.index)
    }

    /// Why `self` and `other` (of one path shape) can never be told apart, if they cannot.
    pub(crate) fn ambiguous_with(&self, other: &ProxyRoute) -> Option<String> {
        if self.host != other.host || self.match_headers != other.match_headers {
            return None;
        }
        let shared = if self.methods.is_empty() || other.methods.is_empty() {
            Some("any method".to_owned())
        } else {
            self.methods.iter().find(|m| other.methods.contains(m)).map(|m| m.to_string())
        }?;
        Some(format!("{} and {} take the same paths and hosts for {shared}", other.describe(), self.describe()))
    }
}

/// How a route takes a method: a route that lists it is chosen over one that takes `HEAD` because
/// it lists `GET`, so a route of its own can answer `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Taken {
    HeadWithGet,
    Listed,
}

/// What a request gets among the routes of one host and path shape.
#[derive(Debug)]
pub(crate) enum Choice<'a> {
    Route(&'a Arc<ProxyRoute>),
    /// Every route requires a header it lacks.
    NotFound,
    /// Routes take it, none its method: these are the methods they take.
    MethodNotAllowed(Vec<Method>),
}

/// Chooses among `routes` (of one host and path shape): a route whose `match_header` the request
/// carries before one without, and among those the route that takes its method, one that lists
/// it before one that takes `HEAD` by listing `GET`.
pub(crate) fn choose<'a>(routes: &'a [Arc<ProxyRoute>], headers: &HeaderMap, method: &Method) -> Choice<'a> {
    let mut best: Option<(&Arc<ProxyRoute>, (bool, Taken))> = None;
    let mut allowed: Vec<Method> = Vec::new();
    let mut taken = false;
    for route in routes {
        if !route.takes_headers(headers) {
            continue;
        }
        taken = true;
        match route.takes_method(method) {
            Some(how) => {
                let rank = (!route.match_headers.is_empty(), how);
                if best.is_none_or(|(_, best)| rank > best) {
                    best = Some((route, rank));
                }
            }
            None => {
                for m in route.taken() {
                    if !allowed.contains(&m) {
                        allowed.push(m);
                    }
                }
            }
        }
    }
    match best.map(|(route, _)| route) {
        Some(route) => Choice::Route(route),
        None if taken => Choice::MethodNotAllowed(allowed),
        None => Choice::NotFound,
    }
}

/// A public route to `catalog` (never called), for tests of the choice.
#[cfg(test)]
pub(crate) fn test_route(index: usize, path: &str, host: Option<&str>, methods: &[Method]) -> Arc<ProxyRoute> {
    let metrics = crate::observe::metrics::Metrics::new();
    let settings = crate::upstream::UpstreamSettings::bare();
    let upstream = Upstream::new("catalog", &"http://127.0.0.1:9".parse().unwrap(), settings, &metrics);
    let policy = Route {
        pattern: path.into(),
        access: crate::policy::access::Access::public(),
        deadline: None,
        max_body_bytes: None,
        shaped: false,
    };
    Arc::new(ProxyRoute {
        index,
        pattern: Pattern::parse(path).unwrap(),
        methods: methods.to_vec(),
        host: host.map(|h| h.parse().unwrap()),
        match_headers: Vec::new(),
        target: Target::one(upstream),
        rewrite: None,
        policy: Arc::new(policy),
        timeout: None,
        max_body_bytes: None,
        in_flight: None,
        websocket: false,
        forward_token: false,
        request_headers: Edits::default(),
        response_headers: Edits::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::upstream::UpstreamSettings;

    fn route(index: usize, host: Option<&str>, methods: &[Method]) -> Arc<ProxyRoute> {
        test_route(index, "/api/{*rest}", host, methods)
    }

    #[test]
    fn the_route_that_takes_the_method_is_chosen_or_the_methods_named() {
        let routes = [route(0, None, &[Method::GET]), route(1, None, &[Method::PUT, Method::GET])];
        let chosen = |method: Method| match choose(&routes, &HeaderMap::new(), &method) {
            Choice::Route(route) => Ok(route.index),
            Choice::NotFound => Err(vec![]),
            Choice::MethodNotAllowed(allowed) => Err(allowed),
        };
        assert_eq!(chosen(Method::PUT), Ok(1));
        assert_eq!(chosen(Method::HEAD), Ok(0), "`GET` takes `HEAD`");
        assert_eq!(chosen(Method::DELETE), Err(vec![Method::GET, Method::HEAD, Method::PUT]));
    }

    /// A route that lists `GET` answers `HEAD` too, as a handler route's `GET` does, unless a
    /// route of its own lists `HEAD`: that one is chosen, and the two are not ambiguous.
    #[test]
    fn get_takes_head_unless_a_route_lists_it() {
        let chosen = |routes: &[Arc<ProxyRoute>], method: Method| match choose(routes, &HeaderMap::new(), &method) {
            Choice::Route(route) => Ok(route.index),
            Choice::NotFound => Err(vec![]),
            Choice::MethodNotAllowed(allowed) => Err(allowed),
        };
        let get = route(0, None, &[Method::GET]);
        assert_eq!(get.taken(), [Method::GET, Method::HEAD]);
        assert_eq!(route(0, None, &[Method::HEAD, Method::GET]).taken(), [Method::HEAD, Method::GET]);
        assert_eq!(route(0, None, &[Method::PUT]).taken(), [Method::PUT]);
        assert_eq!(chosen(std::slice::from_ref(&get), Method::HEAD), Ok(0));
        assert_eq!(chosen(&[route(0, None, &[Method::PUT])], Method::HEAD), Err(vec![Method::PUT]));
        for routes in [[get.clone(), route(1, None, &[Method::HEAD])], [route(1, None, &[Method::HEAD]), get.clone()]] {
            assert_eq!(chosen(&routes, Method::HEAD), Ok(1), "the route that lists it");
            assert_eq!(chosen(&routes, Method::GET), Ok(0));
            assert!(routes[0].ambiguous_with(&routes[1]).is_none());
        }
    }

    #[test]
    fn a_route_whose_headers_the_request_carries_comes_first() {
        let mut canary = route(1, None, &[Method::GET]);
        Arc::get_mut(&mut canary).unwrap().match_headers =
            vec![(HeaderName::from_static("x-canary"), HeaderValue::from_static("1"))];
        let routes = [route(0, None, &[Method::GET]), canary];
        let mut headers = HeaderMap::new();
        let pick = |headers: &HeaderMap| match choose(&routes, headers, &Method::GET) {
            Choice::Route(route) => route.index,
            other => panic!("{other:?}"),
        };
        assert_eq!(pick(&headers), 0);
        headers.insert("x-canary", HeaderValue::from_static("0"));
        assert_eq!(pick(&headers), 0);
        headers.append("x-canary", HeaderValue::from_static("1"));
        assert_eq!(pick(&headers), 1);
        assert!(routes[0].ambiguous_with(&routes[1]).is_none(), "told apart by the header");
    }

    #[test]
    fn a_split_lands_in_proportion_to_its_weights() {
        let up = |name: &str| {
            Upstream::new(name, &"http://127.0.0.1:9".parse().unwrap(), UpstreamSettings::bare(), &Metrics::new())
        };
        let split = Target::split(vec![(up("stable"), 90), (up("canary"), 10), (up("off"), 0)]).unwrap();
        let landed: Vec<&str> = (0..100).map(|roll| split.pick_at(roll).name()).collect();
        assert_eq!(landed.iter().filter(|n| **n == "stable").count(), 90);
        assert_eq!(landed.iter().filter(|n| **n == "canary").count(), 10);
        assert!(!landed.contains(&"off"));
        assert!(Target::split(vec![(up("a"), 0)]).is_none());
        assert!(Target::split(vec![(up("a"), u32::MAX), (up("b"), 1)]).is_none());
    }

    #[test]
    fn routes_told_apart_by_nothing_are_named() {
        let get = route(0, None, &[Method::GET]);
        assert!(get.ambiguous_with(&route(1, None, &[Method::PUT])).is_none());
        assert!(get.ambiguous_with(&route(1, Some("a.test"), &[Method::GET])).is_none());
        let why = get.ambiguous_with(&route(1, None, &[Method::GET, Method::HEAD])).unwrap();
        assert!(why.contains("proxy[0]") && why.contains("proxy[1]") && why.contains("GET"), "{why}");
        assert!(get.ambiguous_with(&route(1, None, &[])).unwrap().contains("any method"));
    }

    #[test]
    fn a_requests_host_is_its_name_in_lowercase() {
        let request =
            |host: &str| axum::http::Request::builder().header("host", host).body(axum::body::Body::empty()).unwrap();
        assert_eq!(request_host(&request("API.example.com:8443")).as_deref(), Some("api.example.com"));
        assert_eq!(request_host(&request("[::1]:80")).as_deref(), Some("::1"));
        assert_eq!(request_host(&request("API.example.com.")).as_deref(), Some("api.example.com"), "as DNS reads it");
    }
}
