//! Passthrough routes (`[[proxy]]`): requests forwarded to an upstream as they are, without a
//! handler. Checked against the BFF's routes and upstreams when the gateway wraps them
//! (`bff-core/src/proxy/`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One passthrough route.
///
/// ```toml
/// [[proxy]]
/// path = "/api/catalog/products/{*rest}"   # a route pattern, or a prefix ending in `/*`
/// methods = ["GET", "HEAD"]               # default: any
/// host = "*.example.com"                  # optional: exact, or one leading wildcard label
/// upstream = "catalog"
/// rewrite = "/products/{rest}"            # optional; else the path is forwarded as it came
/// access = "public"                       # "public" | "authenticated" | "scope:<name>"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyRouteConfig {
    /// The paths taken: a pattern as for handler routes (`/files/{id}`, `/api/{*rest}`), or a
    /// prefix (`/legacy/*`: `/legacy` and everything under it).
    pub path: String,
    /// The methods taken; empty: any. `GET` takes `HEAD` too, unless a route of the same path
    /// lists `HEAD`. A path taken with other methods answers 405 with `Allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The `Host` taken (`api.example.com`, or `*.example.com` for any one label before it);
    /// absent: any. A route with a host is chosen before one without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The upstream, a name from `[upstreams]` (its instances, breaker, bulkhead apply), or a
    /// weighted split for a canary: `{ catalog = 90, catalog-canary = 10 }`.
    pub upstream: ProxyUpstream,
    /// Headers the request must carry, each with this value, for the route to take it
    /// (`{ "x-canary" = "1" }`): a route with them is chosen before one without.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_header: BTreeMap<String, String>,
    /// The upstream path, naming the pattern's parameters (`/products/{rest}`); for a prefix, what
    /// replaces it. Absent: the path as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Who may call it: `public`, `authenticated`, or `scope:<name>`.
    pub access: String,
    /// The longest wait for the upstream's response head (the route's deadline); the body then
    /// streams for as long as bytes move. Absent: `defaults.deadline`.
    #[serde(with = "humantime_serde", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Whether a WebSocket (`Connection: Upgrade`, `Upgrade: websocket` on HTTP/1.1, or an
    /// extended `CONNECT` with `:protocol websocket` on HTTP/2) is tunnelled to the upstream,
    /// after the route's access check; else `Upgrade` is not forwarded. A tunnel closes after
    /// `server.idle_timeout` with no byte either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
    /// Whether the upstream is called with the caller's access token (`Authorization: Bearer`):
    /// a browser session's, kept on the server, or a bearer client's own. The route must not be
    /// public.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_token: bool,
    /// The largest request body, counted as it streams (413 past it). Absent:
    /// `server.max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// The most requests of this route in flight at once, each until its response head; over
    /// it, `503 ROUTE_OVERLOADED` at once. Absent: only the upstream's `max_in_flight`. An upload
    /// holds its place while its client sends the body, at the client's pace: without a cap of
    /// its own, slow uploads could take every place of an upstream that other routes need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Headers added to (`set`) or taken from (`remove`) the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderEdits,
    /// Headers added to (`set`) or taken from (`remove`) the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderEdits,
}

/// Header changes on one side of a passthrough route.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HeaderEdits {
    /// Headers set, replacing any of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Where a passthrough route sends its requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ProxyUpstream {
    /// One upstream, by name.
    One(String),
    /// Upstreams by name and weight: each request goes to one, in those proportions.
    Split(BTreeMap<String, u32>),
}
