//! `GET /web/products/{sku}`: the product page: product, stock, first page of reviews, and the
//! related products (one catalog batch call, once the product names them).

use axum::Json;
use axum::extract::State;
use bff_core::extract::Path;
use bff_core::{BffError, Ctx, encode, encode_list};
use serde::{Deserialize, Serialize};

use crate::Upstreams;
use crate::records::{Product, ProductCard, Reviews, Stock};

/// Reviews on the first page.
pub const REVIEWS_PAGE: usize = 5;

/// The product page.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ProductPage {
    /// The product in full.
    pub product: Product,
    /// Its stock; `null` when inventory is unavailable.
    pub stock: Option<Stock>,
    /// The first page of reviews; `null` when reviews are unavailable.
    pub reviews: Option<Reviews>,
    /// Cards of the related products; `null` when the catalog batch call failed.
    pub related: Option<Vec<ProductCard>>,
}

pub(crate) async fn product_page(
    ctx: Ctx,
    State(up): State<Upstreams>,
    Path(sku): Path<String>,
) -> Result<Json<ProductPage>, BffError> {
    let key = encode(&sku);
    let (product, stock, reviews) = ctx
        .fanout((
            up.catalog.get::<Product>(format!("/products/{key}")).required(),
            up.inventory.get::<Stock>(format!("/stock/{key}")).optional(),
            up.reviews.get::<Reviews>(format!("/reviews?sku={key}&limit={REVIEWS_PAGE}")).optional(),
        ))
        .await
        .map_err(|e| e.when_not_found(format!("no product `{sku}`")))?;
    let related = if product.related.is_empty() {
        Some(Vec::new())
    } else {
        let batch = encode_list(product.related.iter().map(String::as_str));
        let call = up.catalog.get::<Vec<Product>>(format!("/products?skus={batch}")).optional_as("catalog:related");
        let (related,) = ctx.fanout((call,)).await?;
        related.map(|r| r.into_iter().map(ProductCard::from).collect())
    };
    Ok(Json(ProductPage { product, stock, reviews, related }))
}
