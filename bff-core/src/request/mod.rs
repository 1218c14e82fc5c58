//! The request context: id, deadline and degradations, established once at the edge.
//!
//! [`Ctx`] is the extractor a handler takes to run its fan-out; the edge creates what it reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use tokio::time::Instant;

use crate::identity::CallerHeaders;
pub use crate::identity::REQUEST_ID;
pub(crate) use crate::identity::REQUEST_ID_HEADER;
use crate::observe::export::SpanSink;
use crate::observe::spans::{PartSpan, ServerSpan};
use crate::observe::trace_context::TraceContext;
use crate::problem::Problem;
use crate::routes::Route;
use crate::upstream::{AttemptLog, Attempts, CallContext};

/// The largest JSON request body by default (`server.max_body_bytes`).
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// The header listing the optional parts that failed and were left out.
pub const DEGRADED: &str = "x-bff-degraded";

/// What the edge knows about one request, shared with the handler and the fan-out.
#[derive(Debug)]
pub(crate) struct RequestMeta {
    pub(crate) id: HeaderValue,
    /// The matched route's policies, set once the route is found (a field, not an extension:
    /// no allocation).
    pub(crate) policy: std::sync::OnceLock<Arc<Route>>,
    /// The verified caller's headers, set by the credentials layer.
    pub(crate) caller: std::sync::OnceLock<CallerHeaders>,
    pub(crate) start: Instant,
    /// The request's trace, which every upstream attempt carries.
    pub(crate) trace: Option<TraceContext>,
    /// Its server span, when its trace is sampled and spans are exported: ended by the access log,
    /// the parent of each attempt's span.
    pub(crate) server_span: Option<ServerSpan>,
    /// Its upstream attempts, for the access log.
    pub(crate) attempts: Attempts,
    pub(crate) policies: RoutePolicies,
    pub(crate) degraded: Mutex<Degraded>,
}

/// A request's path as it came, before its `..` segments were resolved (merged slashes and
/// decoded unreserved characters aside): set by the edge's normaliser when the path had one, so
/// that a passthrough route can refuse a path that climbed out of the route it was written for.
#[derive(Debug, Clone)]
pub(crate) struct PathWithDots(pub(crate) Box<str>);

impl AttemptLog for RequestMeta {
    fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    fn exported(&self) -> Option<(&SpanSink, &TraceContext)> {
        Some((&self.server_span.as_ref()?.sink, self.trace.as_ref()?))
    }

    fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
}

/// The longest label [`Ctx::degrade`] keeps.
pub const MAX_DEGRADED_LABEL: usize = 64;

/// The most labels listed in `X-Bff-Degraded`; more are counted (`+N more`).
pub const MAX_DEGRADED_LABELS: usize = 16;

/// The optional parts left out of an answer.
#[derive(Debug, Default)]
pub(crate) struct Degraded {
    pub(crate) labels: Vec<String>,
    /// Distinct labels past [`MAX_DEGRADED_LABELS`].
    pub(crate) more: usize,
}

impl Degraded {
    /// The `X-Bff-Degraded` value: the labels, comma-separated, and how many more; `None` if empty.
    pub(crate) fn header_value(&self) -> Option<String> {
        if self.labels.is_empty() {
            return None;
        }
        let mut value = self.labels.join(", ");
        if self.more > 0 {
            value.push_str(&format!(", +{} more", self.more));
        }
        Some(value)
    }
}

impl RequestMeta {
    /// The context of a request made outside any server.
    pub(crate) fn detached(deadline: Duration, concurrency: usize) -> Self {
        Self {
            id: HeaderValue::from_static("detached"),
            policy: std::sync::OnceLock::new(),
            caller: std::sync::OnceLock::new(),
            start: Instant::now(),
            trace: None,
            server_span: None,
            attempts: Attempts::default(),
            policies: RoutePolicies {
                default_deadline: deadline,
                default_max_body_bytes: MAX_JSON_BODY,
                concurrency: concurrency.max(1),
                decode_gzip: false,
            },
            degraded: Mutex::new(Degraded::default()),
        }
    }

    /// When the request must be answered by: its route's deadline, or the default one.
    pub(crate) fn deadline(&self, route: Option<&Route>) -> Instant {
        self.start + route.and_then(|r| r.deadline).unwrap_or(self.policies.default_deadline)
    }

    /// The largest request body its route accepts.
    pub(crate) fn max_body_bytes(&self, route: Option<&Route>) -> usize {
        route.and_then(|r| r.max_body_bytes).unwrap_or(self.policies.default_max_body_bytes)
    }
}

/// The request's host, as the edge settled it (`edge/host.rs`): its `Host`, or, when it has none
/// (an HTTP/2 client may send only `:authority`), its target's authority. As it came: any case,
/// any port. None for a request that names no host, or a `Host` that is not text.
pub(crate) fn host<'a>(headers: &'a axum::http::HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    match headers.get(axum::http::header::HOST) {
        Some(value) => value.to_str().ok(),
        None => uri.authority().map(axum::http::uri::Authority::as_str),
    }
}

/// The name of a request's [`host`]: without its port, and an IPv6 address without its
/// brackets (`[::1]:8080` is `::1`); letters as the request wrote them.
pub(crate) fn host_name<'a>(headers: &'a axum::http::HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    // Cut at ASCII bytes, so still UTF-8.
    std::str::from_utf8(name_of(host(headers, uri)?.as_bytes())).ok()
}

/// The name in `host[:port]`: the port taken off, an IPv6 address's brackets, and the trailing
/// dot of a fully qualified name (`a.example.` is `a.example`, as DNS reads it).
pub(crate) fn name_of(host: &[u8]) -> &[u8] {
    match host.strip_prefix(b"[") {
        Some(v6) => v6.split(|&b| b == b']').next().unwrap_or_default(),
        None => {
            let name = host.iter().rposition(|&b| b == b':').map_or(host, |colon| &host[..colon]);
            name.strip_suffix(b".").unwrap_or(name)
        }
    }
}

/// The policies of the route a request was matched to, if it was.
pub(crate) fn route_of(extensions: &axum::http::Extensions) -> Option<&Route> {
    extensions.get::<Arc<RequestMeta>>()?.policy.get().map(Arc::as_ref)
}

/// What every request gets unless its [`Route`] says otherwise.
#[derive(Debug, Clone)]
pub(crate) struct RoutePolicies {
    pub(crate) default_deadline: Duration,
    pub(crate) default_max_body_bytes: usize,
    pub(crate) concurrency: usize,
    /// Whether a JSON body sent in `gzip` is decoded (`server.request_body_codings`).
    pub(crate) decode_gzip: bool,
}

/// The context of one request: its id, its deadline, and where degradations are recorded.
///
/// Take it as a handler argument, then run the fan-out with [`Ctx::fanout`].
#[derive(Debug, Clone)]
pub struct Ctx {
    meta: Arc<RequestMeta>,
    deadline: Instant,
    concurrency: usize,
    caller: Option<CallerHeaders>,
}

impl Ctx {
    /// The request id, sent on every upstream call.
    pub fn request_id(&self) -> &HeaderValue {
        &self.meta.id
    }

    /// The verified caller's identity headers, sent on every upstream call.
    pub fn caller(&self) -> Option<&CallerHeaders> {
        self.caller.as_ref()
    }

    /// When the whole request must be answered by.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What is left of the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The concurrency cap of homogeneous fan-outs.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Records that an optional part (`label`) failed and was left out of the answer.
    ///
    /// Labels can quote client input (`inventory:<sku>`), and all of them go out in one header:
    /// each is cut to [`MAX_DEGRADED_LABEL`] bytes without control characters, and past
    /// [`MAX_DEGRADED_LABELS`] distinct labels the rest are counted, not listed.
    pub fn degrade(&self, label: impl Into<String>) {
        let label = label.into();
        let label = if label.len() <= MAX_DEGRADED_LABEL && label.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            label
        } else {
            crate::problem::bounded(&label, MAX_DEGRADED_LABEL)
                .chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect()
        };
        let mut degraded = self.meta.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.labels.contains(&label) {
            return;
        }
        if degraded.labels.len() < MAX_DEGRADED_LABELS {
            degraded.labels.push(label);
        } else {
            degraded.more += 1;
        }
    }

    /// The labels recorded by [`Ctx::degrade`] so far (at most [`MAX_DEGRADED_LABELS`]).
    pub fn degraded(&self) -> Vec<String> {
        self.meta.degraded.lock().unwrap_or_else(|e| e.into_inner()).labels.clone()
    }

    /// A context outside any server, for tests and benchmarks of handlers and fan-outs.
    pub fn detached(deadline: Duration, concurrency: usize) -> Self {
        Self {
            meta: Arc::new(RequestMeta::detached(deadline, concurrency)),
            deadline: Instant::now() + deadline,
            concurrency: concurrency.max(1),
            caller: None,
        }
    }

    /// The same request with a deadline `budget` after it arrived, in place of its route's.
    pub(crate) fn within(mut self, budget: Duration) -> Self {
        self.deadline = self.meta.start + budget;
        self
    }

    /// This context on behalf of `caller` (tests of what the identity changes).
    #[cfg(test)]
    pub(crate) fn on_behalf_of(mut self, caller: Option<CallerHeaders>) -> Self {
        self.caller = caller;
        self
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let missing = || {
            let detail = "the gateway failed to handle this request (Ctx on a router not built by Gateway::router)";
            Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", detail)
        };
        let meta = parts.extensions.get::<Arc<RequestMeta>>().ok_or_else(missing)?.clone();
        let deadline = meta.deadline(meta.policy.get().map(Arc::as_ref));
        let concurrency = meta.policies.concurrency;
        // Set by the credentials layer, with the verified `Identity` or `ApiClient`.
        let caller = meta.caller.get().cloned();
        Ok(Self { deadline, meta, concurrency, caller })
    }
}

impl Ctx {
    /// The context of a fan-out part's call, and the part's span when the request's spans are
    /// exported (its attempts are then its children).
    pub(crate) fn part(&self, label: impl FnOnce() -> String, required: bool) -> (CallContext, Option<Box<PartSpan>>) {
        let mut context = CallContext::from(self);
        let Some((sink, trace)) = self.meta.exported() else { return (context, None) };
        let part = PartSpan::begin(sink, trace, label(), required);
        context.parent_span = Some(part.span_id);
        (context, Some(part))
    }
}

impl From<&Ctx> for CallContext {
    /// The calls of a request carry its id, its deadline and its verified caller.
    fn from(ctx: &Ctx) -> Self {
        CallContext {
            request_id: ctx.request_id().clone(),
            deadline: ctx.deadline(),
            streamed: false,
            caller: ctx.caller().cloned(),
            parent_span: None,
            attempts: Some(ctx.meta.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Uri};

    /// `Host` names the host; with none, the target's authority does; with neither, nothing.
    #[test]
    fn the_host_is_hosts_else_the_authoritys() {
        let mut headers = HeaderMap::new();
        let absolute = Uri::from_static("https://B.example:8443/x");
        assert_eq!(super::host(&headers, &absolute), Some("B.example:8443"));
        assert_eq!(super::host(&headers, &Uri::from_static("/x")), None);
        headers.insert("host", HeaderValue::from_static("a.example"));
        assert_eq!(super::host(&headers, &absolute), Some("a.example"));
        headers.insert("host", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(super::host(&headers, &absolute), None, "a host that is not text is none");
    }

    #[test]
    fn a_hosts_name_has_no_port_nor_brackets() {
        for (host, name) in [
            ("a.example", "a.example"),
            ("A.example:8443", "A.example"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("a.example.:443", "a.example"),
            ("a.example.", "a.example"),
            ("a.example..", "a.example."),
            (".", ""),
            ("", ""),
        ] {
            assert_eq!(super::name_of(host.as_bytes()), name.as_bytes(), "{host}");
        }
    }
}
