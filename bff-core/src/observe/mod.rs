//! Observability: log set-up, Prometheus metrics and the health endpoints.

pub mod health;
mod json_lines;
mod log_buffer;
pub mod logging;
pub mod metrics;
