//! `POST /mobile/orders`: places an order for the caller. Prices from the catalog and stock from
//! inventory in one fan-out, then the write; an out-of-stock sku is a 409 naming it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use bff_core::extract::{IdempotencyKey, Json as Body};
use bff_core::{BffError, Ctx, Identity, Reply, each, encode, encode_list};
use serde::{Deserialize, Serialize};

use crate::Upstreams;
use crate::order::{Order, OrderSummary};
use crate::product::Product;

/// The most lines one order may have.
pub const MAX_LINES: usize = 20;
/// The most units of one line.
pub const MAX_QTY: u64 = 99;
/// The longest sku accepted.
const MAX_SKU_LEN: usize = 32;

/// What the app sends: the lines of the basket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    items: Vec<Line>,
}

/// One line: a sku and how many.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    sku: String,
    qty: u64,
}

#[derive(Deserialize)]
struct Stock {
    available: u64,
}

/// Checks the lines and merges repeated skus (in one pass: a basket of any size costs linear time).
fn basket(items: Vec<Line>) -> Result<Vec<Line>, BffError> {
    let invalid = |detail: String| BffError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ORDER", detail);
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(invalid(format!("an order has 1 to {MAX_LINES} lines")));
    }
    let mut lines: Vec<Line> = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for line in items {
        if line.sku.is_empty() || line.sku.len() > MAX_SKU_LEN {
            return Err(invalid(format!("a sku has 1 to {MAX_SKU_LEN} characters")));
        }
        match seen.get(&line.sku) {
            Some(&at) => lines[at].qty = lines[at].qty.saturating_add(line.qty),
            None => {
                seen.insert(line.sku.clone(), lines.len());
                lines.push(line);
            }
        }
    }
    if let Some(line) = lines.iter().find(|l| !(1..=MAX_QTY).contains(&l.qty)) {
        return Err(invalid(format!("`{}`: qty must be 1 to {MAX_QTY}", line.sku)));
    }
    Ok(lines)
}

pub(crate) async fn order_create(
    ctx: Ctx,
    user: Identity,
    State(up): State<Upstreams>,
    key: Option<IdempotencyKey>,
    Body(order): Body<NewOrder>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<OrderSummary>), BffError> {
    let lines = basket(order.items)?;
    let batch = encode_list(lines.iter().map(|l| l.sku.as_str()));
    let (products, stock) = ctx
        .fanout((
            up.catalog.get::<Vec<Product>>(format!("/products?skus={batch}")).required(),
            each(lines.iter().map(|l| up.inventory.get::<Reply>(format!("/stock/{}", encode(&l.sku))).required())),
        ))
        .await?;
    for (line, stock) in lines.iter().zip(&stock) {
        // The catalog leaves unknown skus out of a batch; inventory answers them 404.
        if !products.iter().any(|p| p.sku == line.sku) || stock.status() == StatusCode::NOT_FOUND {
            let detail = format!("no product `{}`", line.sku);
            return Err(BffError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SKU", detail));
        }
        if !stock.status().is_success() {
            return Err(stock.error().into());
        }
        let stock: Stock = stock.json()?;
        if stock.available < line.qty {
            let detail = format!("`{}`: {} asked, {} in stock", line.sku, line.qty, stock.available);
            return Err(BffError::conflict("OUT_OF_STOCK", detail));
        }
    }
    let body = serde_json::json!({ "user": user.subject(), "items": lines });
    let placed = ctx.fetch(up.orders.post::<Reply>("/orders").json(&body).idempotency_key(key.as_ref())).await?;
    let order: Order = match placed.status() {
        StatusCode::UNPROCESSABLE_ENTITY if key.is_some() => return Err(BffError::idempotency_key_reused()),
        status if status.is_success() => placed.json()?,
        _ => return Err(placed.error().into()),
    };
    let summary = OrderSummary::from(order);
    let location = format!("/mobile/orders/{}", summary.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(summary)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, qty: u64) -> Line {
        Line { sku: sku.to_owned(), qty }
    }

    #[test]
    fn baskets_are_merged_and_bounded() {
        let merged = basket(vec![line("A", 1), line("B", 2), line("A", 3)]).unwrap();
        assert_eq!(merged, vec![line("A", 4), line("B", 2)]);
        for bad in [vec![], vec![line("A", 0)], vec![line("A", 60), line("A", 60)], vec![line(&"x".repeat(33), 1)]] {
            assert_eq!(basket(bad).unwrap_err().code(), "INVALID_ORDER");
        }
        let too_many = (0..=MAX_LINES).map(|i| line(&i.to_string(), 1)).collect();
        assert_eq!(basket(too_many).unwrap_err().status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
