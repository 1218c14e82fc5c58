//! Observability: log set-up, Prometheus metrics, the health endpoints, W3C trace context, and
//! the export of spans over OTLP.

pub(crate) mod export;
pub mod health;
mod histogram;
pub(crate) mod inline;
mod json_lines;
mod log_buffer;
pub mod logging;
pub mod metrics;
pub(crate) mod openmetrics;
mod process;
pub(crate) mod spans;
pub(crate) mod trace_context;
