//! Observability: log set-up, Prometheus metrics and the health endpoints.

pub mod health;
mod log_buffer;
pub mod logging;
pub mod metrics;
