//! catalog: `GET /products/{sku}` and the batch `GET /products?skus=a,b,c` (unknown skus are left out).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::data;

/// The most skus one batch call may ask for.
const MAX_BATCH: usize = 100;

pub(crate) fn router() -> Router {
    Router::new().route("/products", get(products_batch)).route("/products/{sku}", get(product_get))
}

async fn product_get(Path(sku): Path<String>) -> Response {
    match data::sku_index(&sku) {
        Some(index) => Json(data::product(index)).into_response(),
        None => super::not_found("product", &sku),
    }
}

#[derive(Deserialize)]
struct BatchQuery {
    skus: Option<String>,
}

async fn products_batch(query: Result<Query<BatchQuery>, QueryRejection>) -> Response {
    let Ok(Query(BatchQuery { skus: Some(skus) })) = query else {
        return super::error(StatusCode::BAD_REQUEST, "missing `skus` query parameter");
    };
    let skus: Vec<&str> = skus.split(',').filter(|s| !s.is_empty()).collect();
    if skus.len() > MAX_BATCH {
        return super::error(StatusCode::BAD_REQUEST, format!("at most {MAX_BATCH} skus per call"));
    }
    let products: Vec<_> = skus.iter().filter_map(|s| data::sku_index(s)).map(data::product).collect();
    Json(products).into_response()
}
