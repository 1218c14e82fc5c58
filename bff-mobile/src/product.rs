//! `GET /mobile/products/{sku}`: product, stock and rating in parallel; stock and rating optional.

use axum::Json;
use axum::extract::State;
use bff_core::extract::Path;
use bff_core::{BffError, Ctx, encode};
use serde::{Deserialize, Serialize};

use crate::Upstreams;

#[derive(Deserialize)]
pub(crate) struct Product {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) price: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stock {
    pub(crate) in_stock: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reviews {
    average_rating: f64,
}

/// A product page, trimmed.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    /// The sku.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price: f64,
    /// `null` when inventory is unavailable.
    pub in_stock: Option<bool>,
    /// Average rating; `null` when reviews are unavailable.
    pub rating: Option<f64>,
}

pub(crate) async fn product_detail(
    ctx: Ctx,
    State(up): State<Upstreams>,
    Path(sku): Path<String>,
) -> Result<Json<ProductView>, BffError> {
    let key = encode(&sku);
    let (product, stock, reviews) = ctx
        .fanout((
            up.catalog.get::<Product>(format!("/products/{key}")).required(),
            up.inventory.get::<Stock>(format!("/stock/{key}")).optional(),
            up.reviews.get::<Reviews>(format!("/reviews?sku={key}&limit=1")).optional(),
        ))
        .await
        .map_err(|e| e.when_not_found(format!("no product `{sku}`")))?;
    Ok(Json(ProductView {
        sku: product.sku,
        name: product.name,
        price: product.price,
        in_stock: stock.map(|s| s.in_stock),
        rating: reviews.map(|r| r.average_rating),
    }))
}
