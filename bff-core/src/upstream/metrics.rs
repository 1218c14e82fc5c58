//! One upstream's series in its gateway's registry, registered once so a call only touches atomics.

use std::time::Duration;

use metrics::{Counter, Histogram};

use super::{UpstreamError, UpstreamErrorKind};
use crate::observe::metrics::Metrics;

pub(crate) struct UpstreamMetrics {
    ok: Counter,
    timeout: Counter,
    connect: Counter,
    status: Counter,
    transport: Counter,
    decode: Counter,
    request: Counter,
    request_body: Counter,
    overloaded: Counter,
    circuit_open: Counter,
    dot_segment: Counter,
    duration: Histogram,
    pub(crate) degraded: Counter,
}

impl UpstreamMetrics {
    pub(crate) fn new(name: &str, registry: &Metrics) -> Self {
        let counter = |outcome: &'static str| {
            let labels = [("upstream", name.to_owned()), ("outcome", outcome.to_owned())];
            registry.counter("bff_upstream_requests_total", &labels)
        };
        let upstream = [("upstream", name.to_owned())];
        Self {
            ok: counter("ok"),
            timeout: counter("timeout"),
            connect: counter("connect"),
            status: counter("status"),
            transport: counter("transport"),
            decode: counter("decode"),
            request: counter("request"),
            request_body: counter("request_body"),
            overloaded: counter("overloaded"),
            circuit_open: counter("circuit_open"),
            dot_segment: counter("dot_segment"),
            duration: registry.histogram("bff_upstream_request_duration_seconds", &upstream),
            degraded: registry.counter("bff_degraded_total", &upstream),
        }
    }

    /// Records one call.
    pub(crate) fn record(&self, result: Result<(), &UpstreamError>, elapsed: Duration) {
        let counter = match result.map_err(UpstreamError::kind) {
            Ok(()) => &self.ok,
            Err(UpstreamErrorKind::Timeout(_)) => &self.timeout,
            Err(UpstreamErrorKind::Connect) => &self.connect,
            Err(UpstreamErrorKind::Status(_)) => &self.status,
            Err(UpstreamErrorKind::Transport) => &self.transport,
            Err(UpstreamErrorKind::Decode) => &self.decode,
            Err(UpstreamErrorKind::Request) => &self.request,
            Err(UpstreamErrorKind::RequestBody | UpstreamErrorKind::RequestBodyTimeout(_)) => &self.request_body,
            Err(UpstreamErrorKind::Overloaded) => &self.overloaded,
            Err(UpstreamErrorKind::CircuitOpen) => &self.circuit_open,
            Err(UpstreamErrorKind::DotSegment(_)) => &self.dot_segment,
        };
        counter.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}
