//! `bff-mobile`: the mobile app's BFF. Small, flat payloads; one round trip per screen.

mod checkout;
mod feed;
mod home;
mod order;
mod product;

use bff_core::routing::{get, post};
use bff_core::{Access, App, ConfigError, Gateway, Routes};

pub use checkout::{Line, MAX_LINES, MAX_QTY, NewOrder};
pub use feed::{Card, Feed, MAX_SKUS};
pub use home::{Home, OrderCard};
pub use order::OrderSummary;
pub use product::ProductView;

bff_core::upstreams! {
    /// The upstreams this BFF calls, resolved once at start-up.
    pub struct Upstreams { users, orders, notifications, catalog, inventory, reviews }
}

/// The mobile BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let routes = Routes::new()
        .route("/mobile/home", get(home::home), Access::scope("profile"))
        .route("/mobile/orders", post(checkout::order_create), Access::scope("orders"))
        .route("/mobile/orders/{id}", get(order::order_detail), Access::scope("orders"))
        .route("/mobile/products/{sku}", get(product::product_detail), Access::authenticated())
        .route("/mobile/feed", get(feed::feed), Access::authenticated())
        .with_state(Upstreams::from_gateway(gateway)?);
    gateway.router(routes)
}
