//! `GET /web/home`: profile, latest orders with items, notifications, and a card for every product
//! in those orders. A dependent fan-out: the product batch call needs the orders first.

use axum::Json;
use axum::extract::State;
use bff_core::{BffError, Ctx, Identity, encode, encode_list};
use serde::{Deserialize, Serialize};

use crate::Upstreams;
use crate::records::{Notification, Order, Product, ProductCard, Profile};

/// How many orders and notifications the page shows.
pub const LATEST: usize = 10;

/// The web home page.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Home {
    /// The full profile.
    pub profile: Profile,
    /// The latest orders, newest first, with their items.
    pub orders: Vec<Order>,
    /// The latest notifications; `null` when the service is unavailable.
    pub notifications: Option<Vec<Notification>>,
    /// A card for each product in `orders`, in order of first appearance; `null` when the catalog
    /// is unavailable.
    pub products: Option<Vec<ProductCard>>,
}

pub(crate) async fn home(ctx: Ctx, user: Identity, State(up): State<Upstreams>) -> Result<Json<Home>, BffError> {
    let id = encode(user.subject());
    let (profile, orders, notifications) = ctx
        .fanout((
            up.users.get::<Profile>(format!("/users/{id}")).required(),
            up.orders.get::<Vec<Order>>(format!("/orders?user={id}&limit={LATEST}")).required(),
            up.notifications.get::<Vec<Notification>>(format!("/notifications?user={id}&limit={LATEST}")).optional(),
        ))
        .await?;

    let mut skus: Vec<&str> = Vec::new();
    for item in orders.iter().flat_map(|o| &o.items) {
        if !skus.contains(&item.sku.as_str()) {
            skus.push(&item.sku);
        }
    }
    let products = if skus.is_empty() {
        Some(Vec::new())
    } else {
        let batch = encode_list(skus.iter().copied());
        let (products,) =
            ctx.fanout((up.catalog.get::<Vec<Product>>(format!("/products?skus={batch}")).optional(),)).await?;
        products.map(|p| p.into_iter().map(ProductCard::from).collect())
    };
    Ok(Json(Home { profile, orders, notifications, products }))
}
