//! `bff-mobile`: the mobile app's BFF. Small, flat payloads; one round trip per screen.

mod checkout;
mod feed;
mod home;
mod order;
mod product;

use axum::Router;
use axum::routing::{get, post};
use bff_core::{ConfigError, Gateway, Upstream};

pub use checkout::{Line, MAX_LINES, MAX_QTY, NewOrder};
pub use feed::{Card, Feed, MAX_SKUS};
pub use home::{Home, OrderCard};
pub use order::OrderSummary;
pub use product::ProductView;

/// The shipped configuration (`config/mobile.toml`), built in as the default.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/mobile.toml");

/// The upstreams this BFF calls, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Upstreams {
    users: Upstream,
    orders: Upstream,
    notifications: Upstream,
    catalog: Upstream,
    inventory: Upstream,
    reviews: Upstream,
}

impl Upstreams {
    /// Resolves every upstream this BFF needs, failing on the first one missing from config.
    pub fn from_gateway(gateway: &Gateway) -> Result<Self, ConfigError> {
        Ok(Self {
            users: gateway.upstream("users")?,
            orders: gateway.upstream("orders")?,
            notifications: gateway.upstream("notifications")?,
            catalog: gateway.upstream("catalog")?,
            inventory: gateway.upstream("inventory")?,
            reviews: gateway.upstream("reviews")?,
        })
    }
}

/// The mobile BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<Router, ConfigError> {
    let routes = Router::new()
        .route("/mobile/home", get(home::home))
        .route("/mobile/orders", post(checkout::order_create))
        .route("/mobile/orders/{id}", get(order::order_detail))
        .route("/mobile/products/{sku}", get(product::product_detail))
        .route("/mobile/feed", get(feed::feed))
        .with_state(Upstreams::from_gateway(gateway)?);
    gateway.router(routes)
}
