//! `bff-web`: the web app's BFF. Rich payloads for desktop pages, CORS for the app's origins.

mod home;
mod notifications;
mod product;
pub mod records;

use axum::Router;
use axum::routing::{get, post};
use bff_core::{ConfigError, Gateway, Upstream};

pub use home::{Home, LATEST};
pub use notifications::Unread;
pub use product::{ProductPage, REVIEWS_PAGE};

/// The shipped configuration (`config/web.toml`), built in as the default.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/web.toml");

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

/// The web BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<Router, ConfigError> {
    let upstreams = Upstreams {
        users: gateway.upstream("users")?,
        orders: gateway.upstream("orders")?,
        notifications: gateway.upstream("notifications")?,
        catalog: gateway.upstream("catalog")?,
        inventory: gateway.upstream("inventory")?,
        reviews: gateway.upstream("reviews")?,
    };
    let routes = Router::new()
        .route("/web/home", get(home::home))
        .route("/web/products/{sku}", get(product::product_page))
        .route("/web/notifications/read", post(notifications::notifications_read))
        .with_state(upstreams);
    gateway.router(routes)
}
