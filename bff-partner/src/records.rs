//! What this BFF reads from the upstreams: the fields both API versions are built from.

use serde::Deserialize;

/// An order as the orders service returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) user_id: u64,
    pub(crate) status: String,
    pub(crate) total: f64,
    pub(crate) currency: String,
    pub(crate) placed_at: String,
    pub(crate) items: Vec<Item>,
}

/// One line of an order.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Item {
    pub(crate) sku: String,
    pub(crate) quantity: u64,
    pub(crate) unit_price: f64,
}

/// A catalog product.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Product {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price: f64,
    pub(crate) currency: String,
    pub(crate) category: String,
}

/// A stock level.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stock {
    pub(crate) available: u64,
    pub(crate) in_stock: bool,
}

/// The most orders one listing reads from the orders service.
pub(crate) const MAX_ORDERS: usize = 50;
