//! The upstream records the web app receives in full: typed, so a change upstream is caught here.

use serde::{Deserialize, Serialize};

/// A user's full profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// User id.
    pub id: u64,
    /// Display name.
    pub display_name: String,
    /// E-mail address.
    pub email: String,
    /// Avatar image.
    pub avatar_url: String,
    /// Member since (date).
    pub member_since: String,
    /// Loyalty tier.
    pub tier: String,
    /// Postal address.
    pub address: Address,
    /// Preferences.
    pub preferences: Preferences,
}

/// A postal address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Address {
    /// Street and number.
    pub street: String,
    /// City.
    pub city: String,
    /// Postcode.
    pub postcode: String,
    /// ISO 3166 country code.
    pub country: String,
}

/// A user's preferences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// UI language.
    pub language: String,
    /// Display currency.
    pub currency: String,
    /// Opted in to marketing e-mail.
    pub marketing_emails: bool,
    /// `light` or `dark`.
    pub theme: String,
}

/// An order with its items.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// `processing`, `shipped` or `delivered`.
    pub status: String,
    /// Total.
    pub total: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// When it was placed (RFC 3339).
    pub placed_at: String,
    /// Its lines.
    pub items: Vec<Item>,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Product.
    pub sku: String,
    /// How many.
    pub quantity: u64,
    /// Price of one.
    pub unit_price: f64,
}

/// A notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Notification id.
    pub id: String,
    /// What kind.
    pub kind: String,
    /// Headline.
    pub title: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Whether it was read.
    pub read: bool,
}

/// A catalog product in full.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Stock-keeping unit.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price.
    pub price: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// Category.
    pub category: String,
    /// Image.
    pub image_url: String,
    /// Skus of related products.
    pub related: Vec<String>,
}

/// A product as a card in a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProductCard {
    /// Stock-keeping unit.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Price.
    pub price: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// Image.
    pub image_url: String,
}

impl From<Product> for ProductCard {
    fn from(p: Product) -> Self {
        Self { sku: p.sku, name: p.name, price: p.price, currency: p.currency, image_url: p.image_url }
    }
}

/// Stock of a product.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    /// Units available.
    pub available: u64,
    /// Whether it can be ordered.
    pub in_stock: bool,
    /// Shipping warehouse.
    pub warehouse: String,
}

/// The first page of a product's reviews.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reviews {
    /// Average rating, 1 to 5.
    pub average_rating: f64,
    /// How many reviews in all.
    pub count: u64,
    /// The first page.
    pub reviews: Vec<Review>,
}

/// One review.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// Review id.
    pub id: String,
    /// Author.
    pub author: String,
    /// 1 to 5.
    pub rating: u8,
    /// Headline.
    pub title: String,
    /// When (RFC 3339).
    pub created_at: String,
}
