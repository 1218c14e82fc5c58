//! `/v2`: money as `{amount, currency}`, cursor pagination, RFC 3339 times, stock on products.
//! Frozen: `openapi/v2.json` is its committed snapshot.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bff_core::extract::{IdempotencyKey, Json as Body, Path, Query};
use bff_core::openapi::ProblemResponses;
use bff_core::routing::get;
use bff_core::{Access, ApiClient, BffError, Ctx, Problem, Reply, Routes, encode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::records::{self, MAX_ORDERS};
use crate::{ApiKeyScheme, Upstreams, account};

/// Orders per page when `limit` is not given, and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 3;

/// An amount of money; `amount` is a decimal string so no precision is lost.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Money {
    /// Decimal amount, e.g. `"975.91"`.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

impl Money {
    fn new(amount: f64, currency: &str) -> Self {
        Self { amount: format!("{amount:.2}"), currency: currency.to_owned() }
    }
}

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderV2 {
    /// Order id.
    pub id: u64,
    /// The customer's user id.
    pub user_id: u64,
    /// `processing`, `shipped` or `delivered`.
    pub status: String,
    /// The total.
    pub total: Money,
    /// When it was placed (RFC 3339).
    pub placed_at: String,
    /// Its lines.
    pub items: Vec<ItemV2>,
}

/// One line of an order.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ItemV2 {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u64,
    /// Price of one.
    pub unit_price: Money,
}

/// A page of a user's orders, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderPageV2 {
    /// The orders on this page.
    pub data: Vec<OrderV2>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Stock of a product.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    /// Whether it can be ordered now.
    pub in_stock: bool,
    /// Units available.
    pub available: u64,
}

/// A product.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProductV2 {
    /// Stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price.
    pub price: Money,
    /// Category.
    pub category: String,
    /// Stock; `null` when inventory is unavailable (see the `X-Bff-Degraded` header).
    pub availability: Option<Availability>,
}

/// An order to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "42", "items": [{"sku": "SKU-0001", "qty": 2}]}))]
pub struct NewOrderV2 {
    /// The customer's user id.
    pub user: String,
    /// 1 to 50 lines; a sku named twice is one line with the quantities added.
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<NewLineV2>,
}

/// One line of an order to place.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewLineV2 {
    /// The product.
    #[schema(min_length = 1, max_length = 32)]
    pub sku: String,
    /// How many, 1 to 99.
    #[schema(minimum = 1, maximum = 99)]
    pub qty: u64,
}

/// The most lines of an order placed through this API.
pub const MAX_LINES: usize = 50;

/// Query of the order listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// The user whose orders to list.
    pub user: String,
    /// The `nextCursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
    /// Orders per page, 1 to 50 (default 3).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<usize>,
}

fn order(o: records::Order) -> OrderV2 {
    OrderV2 {
        id: o.id,
        user_id: o.user_id,
        status: o.status,
        total: Money::new(o.total, &o.currency),
        placed_at: o.placed_at,
        items: o
            .items
            .into_iter()
            .map(|i| ItemV2 { sku: i.sku, quantity: i.quantity, unit_price: Money::new(i.unit_price, &o.currency) })
            .collect(),
    }
}

/// Cursors are opaque to partners: an encoded offset.
fn encode_cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_cursor(cursor: &str) -> Result<usize, BffError> {
    let invalid = || BffError::bad_request("INVALID_CURSOR", "`cursor` is not one this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    text.strip_prefix("o:").and_then(|n| n.parse().ok()).ok_or_else(invalid)
}

/// Get one order.
#[utoipa::path(get, path = "/v2/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, body = OrderV2), (status = 401, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem), (status = 504, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn order_get(
    ctx: Ctx,
    client: ApiClient,
    State(up): State<Upstreams>,
    Path(id): Path<String>,
) -> Result<Json<OrderV2>, BffError> {
    let record = account::owned_order(&ctx, &client, &up, &id).await?;
    Ok(Json(order(record)))
}

/// List a user's orders, newest first, following cursors.
#[utoipa::path(get, path = "/v2/orders", tag = "orders", params(OrderListQuery),
    responses((status = 200, body = OrderPageV2), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn orders_list(
    ctx: Ctx,
    client: ApiClient,
    State(up): State<Upstreams>,
    Query(query): Query<OrderListQuery>,
) -> Result<Json<OrderPageV2>, BffError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_ORDERS).contains(&limit) {
        return Err(BffError::bad_request("INVALID_QUERY", format!("`limit` must be between 1 and {MAX_ORDERS}")));
    }
    let offset = query.cursor.as_deref().map(decode_cursor).transpose()?.unwrap_or(0);
    let orders =
        up.orders.get::<Vec<records::Order>>(format!("/orders?user={}&limit={MAX_ORDERS}", encode(&query.user)));
    let (owner, all) = ctx
        .fanout((account::of_user(&up, &query.user).required(), orders.required()))
        .await
        .map_err(|e| e.when_not_found(format!("no user `{}`", query.user)))?;
    account::ensure(&client, &owner, || format!("no user `{}`", query.user))?;
    let next = offset.saturating_add(limit);
    let next_cursor = (next < all.len()).then(|| encode_cursor(next));
    let data = all.into_iter().skip(offset).take(limit).map(order).collect();
    Ok(Json(OrderPageV2 { data, next_cursor }))
}

/// The lines with repeated skus merged, or a 422 naming what is wrong.
fn lines(items: Vec<NewLineV2>) -> Result<Vec<NewLineV2>, BffError> {
    let invalid = |detail: String| BffError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ORDER", detail);
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(invalid(format!("an order has 1 to {MAX_LINES} lines")));
    }
    let mut merged: Vec<NewLineV2> = Vec::with_capacity(items.len());
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(items.len());
    for line in items {
        if line.sku.is_empty() || line.sku.len() > 32 {
            return Err(invalid("a sku has 1 to 32 characters".to_owned()));
        }
        match at.get(&line.sku) {
            Some(&i) => merged[i].qty = line.qty.saturating_add(merged[i].qty),
            None => {
                at.insert(line.sku.clone(), merged.len());
                merged.push(line);
            }
        }
    }
    match merged.iter().find(|l| !(1..=99).contains(&l.qty)) {
        Some(line) => Err(invalid(format!("`{}`: qty must be 1 to 99", line.sku))),
        None => Ok(merged),
    }
}

/// Place an order for a user. Requires an `Idempotency-Key`: a repeat with the same key and body
/// answers the order placed the first time instead of placing another.
#[utoipa::path(post, path = "/v2/orders", tag = "orders", request_body = NewOrderV2,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", example = "order-7f3a9c",
        description = "The client's unique name for this order, 1 to 255 visible ASCII characters")),
    responses((status = 201, body = OrderV2, headers(("Location" = String, description = "The new order"))), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem), (status = 502, body = Problem), (status = 504, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn order_create(
    ctx: Ctx,
    client: ApiClient,
    State(up): State<Upstreams>,
    key: IdempotencyKey,
    Body(new): Body<NewOrderV2>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<OrderV2>), BffError> {
    let lines = lines(new.items)?;
    let owner = ctx
        .fetch(account::of_user(&up, &new.user))
        .await
        .map_err(|e| e.when_not_found(format!("no user `{}`", new.user)))?;
    account::ensure(&client, &owner, || format!("no user `{}`", new.user))?;
    let checks: Vec<_> =
        lines.iter().map(|l| up.inventory.get::<Reply>(format!("/stock/{}", encode(&l.sku))).required()).collect();
    let stock = ctx.fanout_all(checks).await?;
    for (line, reply) in lines.iter().zip(stock) {
        match reply.status() {
            StatusCode::NOT_FOUND => {
                let detail = format!("no product `{}`", line.sku);
                return Err(BffError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SKU", detail));
            }
            status if status.is_success() => {
                let stock: records::Stock = reply.json()?;
                if stock.available < line.qty {
                    let detail = format!("`{}`: {} asked, {} in stock", line.sku, line.qty, stock.available);
                    return Err(BffError::conflict("OUT_OF_STOCK", detail));
                }
            }
            _ => return Err(reply.error().into()),
        }
    }
    let body = serde_json::json!({ "user": new.user, "items": lines });
    let placed = ctx.fetch(up.orders.post::<Reply>("/orders").json(&body).idempotency_key(Some(&key))).await?;
    match placed.status() {
        StatusCode::NOT_FOUND => Err(BffError::NotFound(format!("no user `{}`", new.user))),
        StatusCode::UNPROCESSABLE_ENTITY => Err(BffError::idempotency_key_reused()),
        status if status.is_success() => {
            let order = order(placed.json::<records::Order>()?);
            Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v2/orders/{}", order.id))], Json(order)))
        }
        _ => Err(placed.error().into()),
    }
}

/// Get one product with its availability.
#[utoipa::path(get, path = "/v2/products/{sku}", tag = "products",
    params(("sku" = String, Path, description = "Stock-keeping unit, e.g. SKU-0001")),
    responses((status = 200, body = ProductV2), (status = 401, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem)),
    security(("api_key" = [])))]
pub(crate) async fn product_get(
    ctx: Ctx,
    State(up): State<Upstreams>,
    Path(sku): Path<String>,
) -> Result<Json<ProductV2>, BffError> {
    let key = encode(&sku);
    let (p, stock) = ctx
        .fanout((
            up.catalog.get::<records::Product>(format!("/products/{key}")).required(),
            up.inventory.get::<records::Stock>(format!("/stock/{key}")).optional(),
        ))
        .await
        .map_err(|e| e.when_not_found(format!("no product `{sku}`")))?;
    Ok(Json(ProductV2 {
        price: Money::new(p.price, &p.currency),
        sku: p.sku,
        name: p.name,
        description: p.description,
        category: p.category,
        availability: stock.map(|s| Availability { in_stock: s.in_stock, available: s.available }),
    }))
}

/// The v2 OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Partner API", version = "2.0.0"),
    paths(order_get, orders_list, order_create, product_get),
    components(schemas(OrderV2, ItemV2, Money, OrderPageV2, NewOrderV2, NewLineV2, ProductV2, Availability, Problem)),
    modifiers(&ApiKeyScheme, &ProblemResponses)
)]
pub struct ApiV2;

pub(crate) fn routes() -> Routes<Upstreams> {
    Routes::new()
        .route("/v2/orders", get(orders_list).post(order_create), Access::scope("orders"))
        .route("/v2/orders/{id}", get(order_get), Access::scope("orders"))
        .route("/v2/products/{sku}", get(product_get), Access::authenticated())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds the document states are the ones the handlers enforce, so generated clients
    /// (and schemathesis) send what is accepted.
    #[test]
    fn the_documented_bounds_are_the_enforced_ones() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json(2).unwrap()).unwrap();
        let list = &doc["paths"]["/v2/orders"]["get"]["parameters"];
        let limit = list.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].as_u64(), limit["schema"]["maximum"].as_u64()),
            (Some(1), Some(MAX_ORDERS as u64))
        );
        let create = &doc["paths"]["/v2/orders"]["post"]["parameters"][0]["schema"];
        assert_eq!(create["maxLength"].as_u64(), Some(255));
        let order = &doc["components"]["schemas"]["NewOrderV2"]["properties"]["items"];
        assert_eq!((order["minItems"].as_u64(), order["maxItems"].as_u64()), (Some(1), Some(MAX_LINES as u64)));
        let line = &doc["components"]["schemas"]["NewLineV2"]["properties"];
        assert_eq!((line["qty"]["minimum"].as_u64(), line["qty"]["maximum"].as_u64()), (Some(1), Some(99)));
        assert_eq!(line["sku"]["maxLength"].as_u64(), Some(32));
        let accepted = vec![NewLineV2 { sku: "S".repeat(32), qty: 99 }; 1];
        assert!(lines(accepted).is_ok());
        assert!(lines(vec![NewLineV2 { sku: "S".repeat(33), qty: 1 }]).is_err());
        assert!(lines(vec![NewLineV2 { sku: "S".into(), qty: 100 }]).is_err());
        let most: Vec<_> = (0..MAX_LINES).map(|i| NewLineV2 { sku: format!("S{i}"), qty: 1 }).collect();
        assert!(lines(most.clone()).is_ok());
        let over: Vec<_> = (0..=MAX_LINES).map(|i| NewLineV2 { sku: format!("S{i}"), qty: 1 }).collect();
        assert!(lines(over).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(6)).unwrap(), 6);
        for bad in ["", "!!", "bzo", &URL_SAFE_NO_PAD.encode("x:1")] {
            assert_eq!(decode_cursor(bad).unwrap_err().code(), "INVALID_CURSOR", "{bad}");
        }
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(Money::new(975.91, "EUR").amount, "975.91");
        assert_eq!(Money::new(3.0, "EUR").amount, "3.00");
    }

    proptest::proptest! {
        /// Any string a partner sends as a cursor is a 400, never a 500 or a panic.
        #[test]
        fn any_cursor_is_an_offset_or_a_400(cursor in "\\PC{0,80}") {
            if let Err(error) = decode_cursor(&cursor) {
                proptest::prop_assert_eq!(error.status().as_u16(), 400);
                proptest::prop_assert_eq!(error.code(), "INVALID_CURSOR");
            }
        }

        #[test]
        fn a_cursor_decodes_to_the_offset_it_encodes(offset in proptest::prelude::any::<usize>()) {
            proptest::prop_assert_eq!(decode_cursor(&encode_cursor(offset)).unwrap(), offset);
        }
    }
}
