//! reviews: `GET /reviews?sku={sku}&limit={n}`.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::data;

pub(crate) fn router() -> Router {
    Router::new().route("/reviews", get(reviews_list))
}

#[derive(Deserialize)]
struct ListQuery {
    sku: Option<String>,
    limit: Option<usize>,
}

async fn reviews_list(query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(ListQuery { sku: Some(sku), limit })) = query else {
        return super::error(StatusCode::BAD_REQUEST, "missing `sku` query parameter");
    };
    match data::sku_index(&sku) {
        Some(index) => Json(data::reviews(index, super::limit(limit))).into_response(),
        None => super::not_found("product", &sku),
    }
}
