//! `bff-mobile`: the mobile app's BFF. Small, flat payloads; one round trip per screen.

mod home;

use axum::Router;
use axum::routing::get;
use bff_core::{ConfigError, Gateway, Upstream};

pub use home::{Home, OrderCard};

/// The shipped configuration (`config/mobile.toml`), built in as the default.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/mobile.toml");

/// The upstreams this BFF calls, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Upstreams {
    users: Upstream,
    orders: Upstream,
    notifications: Upstream,
}

impl Upstreams {
    /// Resolves every upstream this BFF needs, failing on the first one missing from config.
    pub fn from_gateway(gateway: &Gateway) -> Result<Self, ConfigError> {
        Ok(Self {
            users: gateway.upstream("users")?,
            orders: gateway.upstream("orders")?,
            notifications: gateway.upstream("notifications")?,
        })
    }
}

/// The mobile BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<Router, ConfigError> {
    let routes = Router::new()
        .route("/mobile/home", get(home::home))
        .with_state(Upstreams::from_gateway(gateway)?);
    Ok(gateway.router(routes))
}
