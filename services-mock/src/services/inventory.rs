//! inventory: `GET /stock/{sku}`.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::data;

pub(crate) fn router() -> Router {
    Router::new().route("/stock/{sku}", get(stock_get))
}

async fn stock_get(Path(sku): Path<String>) -> Response {
    match data::sku_index(&sku) {
        Some(index) => Json(data::stock(index)).into_response(),
        None => super::not_found("product", &sku),
    }
}
