//! Observability: log set-up and the health endpoints.

pub mod health;
pub mod logging;
