//! The business routes of each mock service.

pub mod auth;
mod catalog;
mod inventory;
mod notifications;
pub mod oidc;
mod orders;
mod reviews;
pub mod streams;
mod users;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(crate) use catalog::router as catalog;
pub(crate) use inventory::router as inventory;
pub(crate) use notifications::router as notifications;
pub(crate) use orders::router as orders;
pub(crate) use reviews::router as reviews;
pub(crate) use users::router as users;

/// The mock's own error body: services are not gateways, so a plain JSON error is enough.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A 404 for an id the data set does not hold.
pub(crate) fn not_found(what: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no {what} with id `{id}`"))
}

/// Default and maximum page sizes for list endpoints.
pub(crate) fn limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(10).min(50)
}
