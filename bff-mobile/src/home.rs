//! `GET /mobile/home`: profile + recent orders + unread count, in one trimmed payload.

use axum::Json;
use axum::extract::State;
use bff_core::{BffError, Ctx, Identity, encode};
use serde::{Deserialize, Serialize};

use crate::Upstreams;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    display_name: String,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    total: f64,
}

#[derive(Deserialize)]
struct Unread {
    count: u64,
}

/// The home screen: exactly what it renders.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Home {
    /// The user's display name.
    pub name: String,
    /// The three most recent orders.
    pub recent_orders: Vec<OrderCard>,
    /// Unread notifications; `null` when the notifications service is unavailable.
    pub badge: Option<u64>,
}

/// One order on the home screen.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct OrderCard {
    /// The order id.
    pub id: u64,
    /// The order total.
    pub total: f64,
}

pub(crate) async fn home(ctx: Ctx, user: Identity, State(up): State<Upstreams>) -> Result<Json<Home>, BffError> {
    let id = encode(user.subject());
    let (profile, orders, unread) = ctx
        .fanout((
            up.users.get::<Profile>(format!("/users/{id}")).required(),
            up.orders.get::<Vec<Order>>(format!("/orders?user={id}&limit=3")).required(),
            up.notifications.get::<Unread>(format!("/unread-count/{id}")).optional(),
        ))
        .await?;
    Ok(Json(Home {
        name: profile.display_name,
        recent_orders: orders.into_iter().map(|o| OrderCard { id: o.id, total: o.total }).collect(),
        badge: unread.map(|u| u.count),
    }))
}
