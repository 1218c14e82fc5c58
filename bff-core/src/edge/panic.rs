//! A panicking handler is our bug: a 500 problem, its message kept for the log only.

use std::any::Any;

use axum::response::{IntoResponse, Response};

use crate::error::BffError;

/// The response for a caught panic; the access log writes the message (via the error report).
pub(super) fn internal_error(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_owned());
    BffError::Internal(format!("handler panicked: {message}").into()).into_response()
}
