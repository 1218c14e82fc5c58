//! users: `GET /users/{id}`.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::data;

pub(crate) fn router() -> Router {
    Router::new().route("/users/{id}", get(user_get))
}

async fn user_get(Path(id): Path<String>) -> Response {
    match data::user_id(&id) {
        Some(user) => Json(data::user(user)).into_response(),
        None => super::not_found("user", &id),
    }
}
