//! OTLP/HTTP with protobuf, written by hand: the `ExportTraceServiceRequest` of a batch encoded
//! straight from the spans into one buffer, and posted to the collector.
//!
//! The generic route (the SDK's spans turned into `opentelemetry-proto` structs, then `prost`)
//! cost about as many instructions per exported span as the request that made it: every attribute
//! copied into a message of its own, and each nested message's length computed again at every
//! level. Here each byte is written once; a nested message's length is written in front of it
//! once it is known. `tests/tests/otlp.rs` decodes what this sends with `opentelemetry-proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

/// Posts batches to a collector's traces URL.
#[derive(Debug)]
pub(crate) struct OtlpHttp {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    resource: Resource,
}

impl OtlpHttp {
    pub(crate) fn new(client: reqwest::Client, url: String, mut headers: HeaderMap, resource: Resource) -> Self {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        Self { client, url, headers, resource }
    }
}

impl SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = encode(&self.resource, &batch);
        let failed = |e: reqwest::Error| OTelSdkError::InternalFailure(format!("{}: {e}", self.url));
        let response =
            self.client.post(&self.url).headers(self.headers.clone()).body(body).send().await.map_err(failed)?;
        let status = response.status();
        // Read to the end, so the connection goes back to the pool.
        let _ = response.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!("{} answered {status}", self.url)))
        }
    }
}

/// The `ExportTraceServiceRequest` of `spans` (one resource, one scope: the first span's).
pub(crate) fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
    // About what a span of ours takes (its attribute names are long), so the buffer rarely grows.
    let mut out = Proto(Vec::with_capacity(512 + spans.len() * 640));
    let Some(first) = spans.first() else { return out.0 };
    // ExportTraceServiceRequest.resource_spans
    out.message(1, |out| {
        // ResourceSpans.resource
        out.message(1, |out| {
            for (key, value) in resource.iter() {
                out.message(1, |out| out.key_value(key.as_str(), value));
            }
        });
        // ResourceSpans.scope_spans
        out.message(2, |out| {
            out.message(1, |out| scope(out, &first.instrumentation_scope));
            for span in spans {
                out.message(2, |out| self::span(out, span));
            }
            out.string(3, first.instrumentation_scope.schema_url().unwrap_or_default());
        });
        out.string(3, resource.schema_url().unwrap_or_default());
    });
    out.0
}

fn scope(out: &mut Proto, scope: &InstrumentationScope) {
    out.string(1, scope.name());
    out.string(2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        out.message(3, |out| out.attribute(attribute));
    }
}

fn span(out: &mut Proto, span: &SpanData) {
    let context = &span.span_context;
    out.bytes(1, &context.trace_id().to_bytes());
    out.bytes(2, &context.span_id().to_bytes());
    out.string(3, &context.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        out.bytes(4, &span.parent_span_id.to_bytes());
    }
    out.string(5, &span.name);
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    out.uint(6, kind);
    out.fixed64(7, nanos(span.start_time));
    out.fixed64(8, nanos(span.end_time));
    for attribute in &span.attributes {
        out.message(9, |out| out.attribute(attribute));
    }
    out.uint(10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        out.message(11, |out| {
            out.fixed64(1, nanos(event.timestamp));
            out.string(2, &event.name);
            for attribute in &event.attributes {
                out.message(3, |out| out.attribute(attribute));
            }
            out.uint(4, u64::from(event.dropped_attributes_count));
        });
    }
    out.uint(12, u64::from(span.events.dropped_count));
    out.uint(14, u64::from(span.links.dropped_count));
    out.message(15, |out| match &span.status {
        Status::Unset => {}
        Status::Ok => out.uint(3, 1),
        Status::Error { description } => {
            out.string(2, description);
            out.uint(3, 2);
        }
    });
    // The trace flags, and whether the parent is remote (known: bit 8; remote: bit 9).
    let remote = if span.parent_span_is_remote { 0x200 } else { 0 };
    out.fixed32(16, u32::from(context.trace_flags().to_u8()) | 0x100 | remote);
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A protobuf message being written.
struct Proto(Vec<u8>);

/// Room left for a nested message's length: a `u32` takes at most five bytes as a varint.
const LENGTH_ROOM: usize = 5;

impl Proto {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value & 0x7f) as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A length-delimited field, left out when empty (proto3's default).
    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.always_bytes(field, bytes);
        }
    }

    fn always_bytes(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.tag(field, 0);
            self.varint(value);
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        self.tag(field, 1);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        self.tag(field, 5);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A nested message: `body` writes it, then its length goes in front (moved left over the
    /// room not needed).
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.tag(field, 2);
        let at = self.0.len();
        self.0.extend_from_slice(&[0; LENGTH_ROOM]);
        body(self);
        let mut length = self.0.len() - at - LENGTH_ROOM;
        let mut used = 0;
        loop {
            let byte = (length & 0x7f) as u8;
            length >>= 7;
            self.0[at + used] = if length == 0 { byte } else { byte | 0x80 };
            used += 1;
            if length == 0 {
                break;
            }
        }
        if used < LENGTH_ROOM {
            self.0.copy_within(at + LENGTH_ROOM.., at + used);
            self.0.truncate(self.0.len() - (LENGTH_ROOM - used));
        }
    }

    fn attribute(&mut self, attribute: &KeyValue) {
        self.key_value(attribute.key.as_str(), &attribute.value);
    }

    /// A `KeyValue` message's fields.
    fn key_value(&mut self, key: &str, value: &Value) {
        self.string(1, key);
        self.message(2, |out| out.any_value(value));
    }

    /// An `AnyValue` message's field: the one of its `oneof` that is set, even when empty.
    fn any_value(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.always_bytes(1, text.as_str().as_bytes()),
            Value::Bool(flag) => {
                self.tag(2, 0);
                self.varint(u64::from(*flag));
            }
            Value::I64(number) => {
                self.tag(3, 0);
                // Two's complement, as int64 is written.
                self.varint(*number as u64);
            }
            Value::F64(number) => {
                self.tag(4, 1);
                self.0.extend_from_slice(&number.to_bits().to_le_bytes());
            }
            Value::Array(array) => self.message(5, |out| out.array(array)),
            other => self.always_bytes(1, other.to_string().as_bytes()),
        }
    }

    /// An `ArrayValue` message's values.
    fn array(&mut self, array: &Array) {
        match array {
            Array::Bool(values) => values.iter().for_each(|v| self.message(1, |out| out.any_value(&Value::Bool(*v)))),
            Array::I64(values) => values.iter().for_each(|v| self.message(1, |out| out.any_value(&Value::I64(*v)))),
            Array::F64(values) => values.iter().for_each(|v| self.message(1, |out| out.any_value(&Value::F64(*v)))),
            Array::String(values) => {
                values.iter().for_each(|v| self.message(1, |out| out.always_bytes(1, v.as_str().as_bytes())));
            }
            other => self.message(1, |out| out.always_bytes(1, other.to_string().as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_nested_lengths_are_minimal() {
        let mut out = Proto(Vec::new());
        out.varint(300);
        assert_eq!(out.0, [0xac, 0x02]);
        let mut out = Proto(Vec::new());
        out.message(1, |out| out.string(2, "hi"));
        assert_eq!(out.0, [0x0a, 4, 0x12, 2, b'h', b'i']);
        // A body over 127 bytes takes a two-byte length.
        let long = "x".repeat(200);
        let mut out = Proto(Vec::new());
        out.message(1, |out| out.string(1, &long));
        assert_eq!(&out.0[..5], [0x0a, 203, 1, 0x0a, 200], "{:?}", &out.0[..6]);
        assert_eq!(out.0.len(), 3 + 3 + 200);
        let mut out = Proto(Vec::new());
        out.any_value(&Value::I64(-1));
        assert_eq!(out.0.len(), 1 + 10, "a negative int64 is ten bytes");
    }
}
