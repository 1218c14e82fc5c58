//! notifications: `GET /unread-count/{userId}` and `GET /notifications?user={id}&limit={n}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::data;

pub(crate) fn router() -> Router {
    Router::new().route("/unread-count/{user}", get(unread_count_get)).route("/notifications", get(notifications_list))
}

async fn unread_count_get(Path(raw): Path<String>) -> Response {
    match data::user_id(&raw) {
        Some(user) => Json(json!({ "count": data::unread_count(user) })).into_response(),
        None => super::not_found("user", &raw),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
}

async fn notifications_list(query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(ListQuery { user: Some(raw), limit })) = query else {
        return super::error(StatusCode::BAD_REQUEST, "missing `user` query parameter");
    };
    match data::user_id(&raw) {
        Some(user) => Json(data::notifications(user, super::limit(limit))).into_response(),
        None => super::not_found("user", &raw),
    }
}
