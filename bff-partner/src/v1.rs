//! `/v1`: the original partner contract (money as numbers, page numbers, Unix-second times).
//! Frozen: `openapi/v1.json` is its committed snapshot. Deprecated in favour of `/v2`.

use axum::Json;
use axum::extract::State;
use bff_core::extract::{Path, Query};
use bff_core::openapi::ProblemResponses;
use bff_core::routing::get;
use bff_core::{Access, ApiClient, BffError, Ctx, Problem, Routes, encode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::records::{self, MAX_ORDERS};
use crate::{ApiKeyScheme, Upstreams, account};

/// Orders per page.
pub const PAGE_SIZE: usize = 3;

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderV1 {
    /// Order id.
    pub id: u64,
    /// The customer's user id.
    pub user_id: u64,
    /// `processing`, `shipped` or `delivered`.
    pub status: String,
    /// Total in `currency`, as a decimal number.
    pub total: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// When it was placed, in seconds since the Unix epoch.
    pub placed_at: u64,
    /// Its lines.
    pub items: Vec<ItemV1>,
}

/// One line of an order.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ItemV1 {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u64,
    /// Price of one, in the order's currency.
    pub unit_price: f64,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderPageV1 {
    /// The orders on this page.
    pub orders: Vec<OrderV1>,
    /// This page's number, from 1.
    pub page: usize,
    /// Orders per page.
    pub page_size: usize,
    /// How many pages there are.
    pub total_pages: usize,
}

/// A product.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProductV1 {
    /// Stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price as a decimal number.
    pub price: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// Category.
    pub category: String,
}

/// Query of the order listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// The user whose orders to list.
    pub user: String,
    /// Page number, from 1.
    #[param(minimum = 1)]
    pub page: Option<usize>,
}

fn order(o: records::Order) -> Result<OrderV1, BffError> {
    let placed = humantime::parse_rfc3339(&o.placed_at)
        .map_err(|_| BffError::Internal(format!("order {} has an unreadable placedAt", o.id).into()))?;
    let placed_at = placed.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(OrderV1 {
        id: o.id,
        user_id: o.user_id,
        status: o.status,
        total: o.total,
        currency: o.currency,
        placed_at,
        items: o
            .items
            .into_iter()
            .map(|i| ItemV1 { sku: i.sku, quantity: i.quantity, unit_price: i.unit_price })
            .collect(),
    })
}

/// Get one order.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderV1), (status = 401, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem), (status = 504, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn order_get(
    ctx: Ctx,
    client: ApiClient,
    State(up): State<Upstreams>,
    Path(id): Path<String>,
) -> Result<Json<OrderV1>, BffError> {
    let record = account::owned_order(&ctx, &client, &up, &id).await?;
    Ok(Json(order(record)?))
}

/// List a user's orders, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(OrderListQuery),
    responses((status = 200, body = OrderPageV1), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn orders_list(
    ctx: Ctx,
    client: ApiClient,
    State(up): State<Upstreams>,
    Query(query): Query<OrderListQuery>,
) -> Result<Json<OrderPageV1>, BffError> {
    let page = query.page.unwrap_or(1);
    if page == 0 {
        return Err(BffError::bad_request("INVALID_QUERY", "`page` starts at 1"));
    }
    let orders =
        up.orders.get::<Vec<records::Order>>(format!("/orders?user={}&limit={MAX_ORDERS}", encode(&query.user)));
    let (owner, all) = ctx
        .fanout((account::of_user(&up, &query.user).required(), orders.required()))
        .await
        .map_err(|e| e.when_not_found(format!("no user `{}`", query.user)))?;
    account::ensure(&client, &owner, || format!("no user `{}`", query.user))?;
    let total_pages = all.len().div_ceil(PAGE_SIZE);
    let orders = all
        .into_iter()
        .skip((page - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .map(order)
        .collect::<Result<_, _>>()?;
    Ok(Json(OrderPageV1 { orders, page, page_size: PAGE_SIZE, total_pages }))
}

/// Get one product.
#[utoipa::path(get, path = "/v1/products/{sku}", tag = "products",
    params(("sku" = String, Path, description = "Stock-keeping unit, e.g. SKU-0001")),
    responses((status = 200, body = ProductV1), (status = 401, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn product_get(
    ctx: Ctx,
    State(up): State<Upstreams>,
    Path(sku): Path<String>,
) -> Result<Json<ProductV1>, BffError> {
    let p = ctx
        .fetch(up.catalog.get::<records::Product>(format!("/products/{}", encode(&sku))))
        .await
        .map_err(|e| e.when_not_found(format!("no product `{sku}`")))?;
    Ok(Json(ProductV1 {
        sku: p.sku,
        name: p.name,
        description: p.description,
        price: p.price,
        currency: p.currency,
        category: p.category,
    }))
}

/// The v1 OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Partner API", version = "1.0.0", description = "Deprecated: use /v2. Sunset on 2027-06-30."),
    paths(order_get, orders_list, product_get),
    components(schemas(OrderV1, ItemV1, OrderPageV1, ProductV1, Problem)),
    modifiers(&ApiKeyScheme, &ProblemResponses)
)]
pub struct ApiV1;

pub(crate) fn routes() -> Routes<Upstreams> {
    Routes::new()
        .route("/v1/orders", get(orders_list), Access::scope("orders"))
        .route("/v1/orders/{id}", get(order_get), Access::scope("orders"))
        .route("/v1/products/{sku}", get(product_get), Access::authenticated())
}
