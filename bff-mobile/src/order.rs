//! `GET /mobile/orders/{id}`: one order, flattened for a list row.

use axum::Json;
use axum::extract::State;
use bff_core::extract::Path;
use bff_core::{BffError, Ctx, Identity, encode};
use serde::{Deserialize, Serialize};

use crate::Upstreams;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Order {
    id: u64,
    user_id: u64,
    status: String,
    total: f64,
    placed_at: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    quantity: u64,
}

/// An order as the mobile app shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    /// The order id.
    pub id: u64,
    /// `processing`, `shipped` or `delivered`.
    pub status: String,
    /// The order total.
    pub total: f64,
    /// How many items, counting quantities.
    pub item_count: u64,
    /// When it was placed (RFC 3339).
    pub placed_at: String,
}

pub(crate) async fn order_detail(
    ctx: Ctx,
    user: Identity,
    State(up): State<Upstreams>,
    Path(id): Path<String>,
) -> Result<Json<OrderSummary>, BffError> {
    let not_found = || format!("no order `{id}`");
    let order = ctx
        .fetch(up.orders.get::<Order>(format!("/orders/{}", encode(&id))))
        .await
        .map_err(|e| e.when_not_found(not_found()))?;
    // Another user's order does not exist, as far as this caller can tell.
    if order.user_id.to_string() != user.subject() {
        return Err(BffError::NotFound(not_found()));
    }
    Ok(Json(OrderSummary::from(order)))
}

impl From<Order> for OrderSummary {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            status: order.status,
            total: order.total,
            item_count: order.items.iter().map(|i| i.quantity).sum(),
            placed_at: order.placed_at,
        }
    }
}
