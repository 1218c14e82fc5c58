//! orders: `GET /orders?user={id}&limit={n}` (newest first) and `GET /orders/{id}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::data;

pub(crate) fn router() -> Router {
    Router::new().route("/orders", get(orders_list)).route("/orders/{id}", get(order_get))
}

#[derive(Deserialize)]
struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
}

async fn orders_list(query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(query)) = query else {
        return super::error(StatusCode::BAD_REQUEST, "invalid query");
    };
    let Some(raw) = query.user else {
        return super::error(StatusCode::BAD_REQUEST, "missing `user` query parameter");
    };
    match data::user_id(&raw) {
        Some(user) => Json(data::orders(user, super::limit(query.limit))).into_response(),
        None => super::not_found("user", &raw),
    }
}

async fn order_get(Path(id): Path<String>) -> Response {
    match data::order_id(&id) {
        Some((user, n)) => Json(data::order(user, n)).into_response(),
        None => super::not_found("order", &id),
    }
}
