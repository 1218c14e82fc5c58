//! Observability: log set-up, Prometheus metrics, the health endpoints, and W3C trace context.

pub mod health;
mod json_lines;
mod log_buffer;
pub mod logging;
pub mod metrics;
mod process;
pub(crate) mod trace_context;
