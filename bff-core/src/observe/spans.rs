//! The spans the gateway exports (OpenTelemetry semantic conventions for HTTP): one server span
//! per request, one internal span per fan-out part, and one client span per upstream attempt,
//! with the ids the logs name and the `traceparent`s carry. Built only for a sampled trace with
//! export on ([`SpanSink`]).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use http::Method;
use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::export::SpanSink;
use super::trace_context::{TraceContext, nonzero_u64};
use crate::identity::Tenant;

/// A request's server span, begun by the edge when its trace is sampled and spans are exported,
/// ended with its response head ([`ServerSpan::end`]).
#[derive(Debug, Clone)]
pub(crate) struct ServerSpan {
    pub(crate) sink: SpanSink,
    started: SystemTime,
    client: Option<IpAddr>,
}

/// What a request's span records of its answer.
#[derive(Debug)]
pub(crate) struct Answered<'a> {
    pub(crate) method: &'a Method,
    /// The route pattern it matched, if any.
    pub(crate) route: Option<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    /// `user:<id>` or `account:<name>`.
    pub(crate) caller: Option<Tenant<'a>>,
    /// The problem code of a refusal or failure, and whether it was the gateway's own fault.
    pub(crate) problem: Option<(&'a str, bool)>,
    /// The optional parts left out.
    pub(crate) degraded: Option<&'a str>,
    /// The route's limits' decisions: its `RateLimit` response field
    /// (`"per-user";r=19;t=1, "quota";r=990;t=3600`).
    pub(crate) limits: Option<&'a str>,
}

impl ServerSpan {
    pub(crate) fn begin(sink: SpanSink, client: Option<IpAddr>) -> Self {
        Self { sink, started: SystemTime::now(), client }
    }

    /// Ends the span of `trace`'s request with what it answered, and queues it.
    pub(crate) fn end(&self, trace: &TraceContext, answered: &Answered<'_>) {
        let method = answered.method.as_str().to_owned();
        let name = match answered.route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", answered.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(answered.status)),
        ];
        if let Some(route) = answered.route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        if let Some(client) = self.client {
            attributes.push(KeyValue::new("client.address", client.to_string()));
        }
        if let Some(caller) = answered.caller {
            attributes.push(KeyValue::new("enduser.id", caller.to_string()));
        }
        let now = SystemTime::now();
        let mut events = SpanEvents::default();
        let mut status = Status::Unset;
        if let Some((code, internal)) = answered.problem {
            attributes.push(KeyValue::new("error.type", code.to_owned()));
            // A refusal (a limit, a missing credential) is an event; a server error is the span's.
            let kind = if internal { "bff.failed" } else { "bff.refused" };
            events.events.push(Event::new(kind, now, vec![KeyValue::new("code", code.to_owned())], 0));
            if answered.status >= 500 {
                status = Status::error(code.to_owned());
            }
        }
        if let Some(degraded) = answered.degraded {
            events.events.push(Event::new("bff.degraded", now, vec![KeyValue::new("parts", degraded.to_owned())], 0));
        }
        for (name, remaining, reset) in answered.limits.into_iter().flat_map(limit_states) {
            let attributes = vec![
                KeyValue::new("bff.limit", name.to_owned()),
                KeyValue::new("bff.limit.remaining", remaining),
                KeyValue::new("bff.limit.reset_seconds", reset),
            ];
            events.events.push(Event::new("bff.limit", now, attributes, 0));
        }
        let span =
            Ended { span_id: trace.span_id, parent: trace.parent, kind: SpanKind::Server, name, started: self.started };
        span.submit(&self.sink, trace, attributes, events, status);
    }
}

/// Each limit of a `RateLimit` field (`"per-user";r=19;t=1, "quota";r=990;t=3600`): its name,
/// what is left and the seconds until it is whole. Items that do not read so are skipped.
fn limit_states(field: &str) -> impl Iterator<Item = (&str, i64, i64)> {
    field.split(", ").filter_map(|item| {
        let (name, params) = item.strip_prefix('"')?.split_once('"')?;
        let (mut remaining, mut reset) = (None, None);
        for param in params.split(';').filter(|p| !p.is_empty()) {
            match param.split_once('=')? {
                ("r", value) => remaining = value.parse().ok(),
                ("t", value) => reset = value.parse().ok(),
                _ => {}
            }
        }
        Some((name, remaining?, reset?))
    })
}

/// A fan-out part's span, begun: the parent of its call's attempts. Boxed while its call runs, so
/// that a part's future grows by a pointer, not by the span. Dropped before it ended (a required
/// sibling failed, or the client went away), it ends as `bff.part.cancelled`.
#[derive(Debug)]
pub(crate) struct PartSpan {
    pub(crate) span_id: u64,
    started: SystemTime,
    label: String,
    required: bool,
    sink: SpanSink,
    /// The request's trace: its span is the part's parent.
    trace: TraceContext,
    ended: bool,
}

impl PartSpan {
    pub(crate) fn begin(sink: &SpanSink, trace: &TraceContext, label: String, required: bool) -> Box<Self> {
        let (sink, trace) = (sink.clone(), trace.clone());
        Box::new(Self {
            span_id: nonzero_u64(),
            started: SystemTime::now(),
            label,
            required,
            sink,
            trace,
            ended: false,
        })
    }

    /// Ends the part, a child of the request's span: `failure` is the problem code of its call's
    /// failure (a required part fails the request with it, an optional one is left out: degraded).
    pub(crate) fn end(&mut self, failure: Option<&str>) {
        self.submit(failure, false);
    }

    fn submit(&mut self, failure: Option<&str>, cancelled: bool) {
        self.ended = true;
        let label = std::mem::take(&mut self.label);
        let name = format!("part {label}");
        let mut attributes = vec![
            KeyValue::new("bff.part", label),
            KeyValue::new("bff.part.required", self.required),
            KeyValue::new("bff.part.degraded", !self.required && failure.is_some()),
        ];
        if cancelled {
            attributes.push(KeyValue::new("bff.part.cancelled", true));
        }
        let mut status = Status::Unset;
        if let Some(code) = failure {
            attributes.push(KeyValue::new("error.type", code.to_owned()));
            if self.required {
                status = Status::error(code.to_owned());
            }
        }
        let span = Ended {
            span_id: self.span_id,
            parent: Some(self.trace.span_id),
            kind: SpanKind::Internal,
            name,
            started: self.started,
        };
        span.submit(&self.sink, &self.trace, attributes, SpanEvents::default(), status);
    }
}

impl Drop for PartSpan {
    fn drop(&mut self) {
        if !self.ended {
            self.submit(None, true);
        }
    }
}

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Its response status.
    Status(u16),
    /// Why there was no response: `timeout`, `connect`, `error`, or refused before it was sent
    /// (`circuit_open`, `shed`).
    Failed(&'static str),
    /// Answered by the cache with no attempt: `hit`, or `stale` because the upstream failed.
    Cache(&'static str),
}

/// One upstream attempt, as its client span records it.
#[derive(Debug)]
pub(crate) struct Attempted<'a> {
    pub(crate) upstream: &'a str,
    /// The instance's host and port; none when no instance was called.
    pub(crate) instance: Option<(&'a str, u16)>,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) outcome: Outcome,
    pub(crate) started: SystemTime,
    /// Its parent: the fan-out part it belongs to, else the request.
    pub(crate) parent: u64,
    /// For a resend: how many were sent before it, and why (`retry`, `hedge`, `unprocessed`).
    pub(crate) resent: Option<(u8, &'static str)>,
    /// The breaker's state as the call met it (`closed`, `half_open`, `open`), if it has one.
    pub(crate) circuit: Option<&'static str>,
    /// Whether it revalidates a stale cached answer.
    pub(crate) revalidation: bool,
    /// The response body's size, when known.
    pub(crate) bytes: Option<u64>,
}

/// Queues the client span `span_id` of an attempt in `trace`.
pub(crate) fn attempt(sink: &SpanSink, trace: &TraceContext, span_id: u64, attempted: &Attempted<'_>) {
    let method = attempted.method.as_str().to_owned();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("bff.upstream", attempted.upstream.to_owned()),
        KeyValue::new("url.path", attempted.path.to_owned()),
    ];
    if let Some((host, port)) = attempted.instance {
        attributes.push(KeyValue::new("server.address", host.to_owned()));
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    if let Some((count, reason)) = attempted.resent {
        attributes.push(KeyValue::new("http.request.resend_count", i64::from(count)));
        attributes.push(KeyValue::new("bff.resend.reason", reason));
    }
    if let Some(state) = attempted.circuit {
        attributes.push(KeyValue::new("bff.circuit", state));
    }
    if attempted.revalidation {
        attributes.push(KeyValue::new("bff.cache", "revalidate"));
    }
    if let Some(bytes) = attempted.bytes {
        attributes.push(KeyValue::new("http.response.body.size", i64::try_from(bytes).unwrap_or(i64::MAX)));
    }
    let mut events = SpanEvents::default();
    let status = match attempted.outcome {
        Outcome::Status(code) => {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
            if code >= 500 {
                attributes.push(KeyValue::new("error.type", Value::from(code.to_string())));
                Status::error(code.to_string())
            } else {
                Status::Unset
            }
        }
        Outcome::Failed(why) => {
            attributes.push(KeyValue::new("error.type", why));
            // A decision of the gateway's own: an event, as limits are.
            let decided = match why {
                "circuit_open" => Some("bff.circuit_open"),
                "shed" => Some("bff.shed"),
                _ => None,
            };
            if let Some(name) = decided {
                let upstream = KeyValue::new("bff.upstream", attempted.upstream.to_owned());
                events.events.push(Event::new(name, SystemTime::now(), vec![upstream], 0));
            }
            Status::error(why)
        }
        Outcome::Cache(how) => {
            attributes.push(KeyValue::new("bff.cache", how));
            Status::Unset
        }
    };
    let name = format!("{method} {}", attempted.upstream);
    let span =
        Ended { span_id, parent: Some(attempted.parent), kind: SpanKind::Client, name, started: attempted.started };
    span.submit(sink, trace, attributes, events, status);
}

/// What every span of a request has, whatever its kind.
struct Ended {
    span_id: u64,
    /// The parent span: a server span's is the client's (remote; none when the trace began
    /// here), any other's is in this process.
    parent: Option<u64>,
    kind: SpanKind,
    name: String,
    started: SystemTime,
}

impl Ended {
    /// Ends the span now, in `trace`, and queues it.
    fn submit(
        self,
        sink: &SpanSink,
        trace: &TraceContext,
        attributes: Vec<KeyValue>,
        events: SpanEvents,
        status: Status,
    ) {
        sink.submit(SpanData {
            span_context: context(trace, self.span_id),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: self.kind == SpanKind::Server && self.parent.is_some(),
            span_kind: self.kind,
            name: Cow::Owned(self.name),
            start_time: self.started,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: sink.scope().clone(),
        });
    }
}

fn context(trace: &TraceContext, span_id: u64) -> SpanContext {
    let state = trace
        .state
        .as_ref()
        .and_then(|s| s.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or(TraceState::NONE);
    SpanContext::new(TraceId::from(trace.trace_id), SpanId::from(span_id), TraceFlags::SAMPLED, false, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_of_a_ratelimit_field_is_read_and_anything_else_skipped() {
        let field = r#""per-user";r=19;t=1, "quota";r=990;t=3600"#;
        assert_eq!(limit_states(field).collect::<Vec<_>>(), [("per-user", 19, 1), ("quota", 990, 3600)]);
        let odd = r#"per-user;r=1;t=1, "no-reset";r=3, "x";r=a;t=1, "ok";t=2;r=0"#;
        assert_eq!(limit_states(odd).collect::<Vec<_>>(), [("ok", 0, 2)]);
        assert_eq!(limit_states("").count(), 0);
    }
}
