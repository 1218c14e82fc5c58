//! `GET /mobile/feed?skus=a,b,c`: one card per sku, from one catalog batch call plus a capped
//! per-sku stock fan-out. Skus the catalog does not return are left out and reported as degraded.

use axum::Json;
use axum::extract::State;
use bff_core::extract::Query;
use bff_core::{BffError, Ctx, each, encode, encode_list};
use serde::{Deserialize, Serialize};

use crate::Upstreams;
use crate::product::{Product, Stock};

/// The most skus one feed request may ask for.
pub const MAX_SKUS: usize = 50;

#[derive(Deserialize)]
pub(crate) struct FeedQuery {
    skus: Option<String>,
}

/// The feed screen.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Feed {
    /// One card per sku found, in the order asked for.
    pub cards: Vec<Card>,
}

/// One product card.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    /// The sku.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price: f64,
    /// `null` when its stock could not be fetched.
    pub in_stock: Option<bool>,
}

fn parse_skus(raw: Option<&str>) -> Result<Vec<&str>, BffError> {
    let raw = raw.ok_or_else(|| BffError::bad_request("INVALID_QUERY", "`skus` is required: ?skus=a,b,c"))?;
    unique_skus(raw.split(',').map(str::trim).filter(|s| !s.is_empty()))
}

/// The distinct skus, in order. The cap applies while de-duplicating: each sku is compared with
/// at most MAX_SKUS kept ones, and the first one past the cap ends it, so the work is bounded by
/// the cap, not by the query's length.
fn unique_skus<'a>(all: impl Iterator<Item = &'a str>) -> Result<Vec<&'a str>, BffError> {
    let mut skus: Vec<&str> = Vec::with_capacity(MAX_SKUS);
    for sku in all {
        if skus.contains(&sku) {
            continue;
        }
        if skus.len() == MAX_SKUS {
            return Err(BffError::bad_request("INVALID_QUERY", format!("`skus` names more than {MAX_SKUS} skus")));
        }
        skus.push(sku);
    }
    if skus.is_empty() {
        return Err(BffError::bad_request("INVALID_QUERY", "`skus` names no sku"));
    }
    Ok(skus)
}

pub(crate) async fn feed(
    ctx: Ctx,
    State(up): State<Upstreams>,
    Query(query): Query<FeedQuery>,
) -> Result<Json<Feed>, BffError> {
    let skus = parse_skus(query.skus.as_deref())?;
    let batch = encode_list(skus.iter().copied());
    let (products, stock) = ctx
        .fanout((
            up.catalog.get::<Vec<Product>>(format!("/products?skus={batch}")).required(),
            each(skus.iter().map(|s| {
                up.inventory.get::<Stock>(format!("/stock/{}", encode(s))).optional_as(format!("inventory:{s}"))
            })),
        ))
        .await?;
    let mut cards = Vec::with_capacity(skus.len());
    for (sku, stock) in skus.iter().zip(stock) {
        match products.iter().find(|p| p.sku == *sku) {
            Some(product) => cards.push(Card {
                sku: product.sku.clone(),
                name: product.name.clone(),
                price: product.price,
                in_stock: stock.map(|s| s.in_stock),
            }),
            None => ctx.degrade(format!("catalog:{sku}")),
        }
    }
    Ok(Json(Feed { cards }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_trimmed_deduplicated_and_bounded() {
        assert_eq!(parse_skus(Some("a, b,,a")).unwrap(), vec!["a", "b"]);
        assert_eq!(parse_skus(None).unwrap_err().code(), "INVALID_QUERY");
        assert_eq!(parse_skus(Some(",")).unwrap_err().code(), "INVALID_QUERY");
        let many = (0..=MAX_SKUS).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(parse_skus(Some(&many)).unwrap_err().code(), "INVALID_QUERY");
    }

    /// A query of thousands of distinct skus is refused after looking at one more than the cap:
    /// its cost does not grow with its length.
    #[test]
    fn a_long_list_is_refused_after_the_cap_not_after_reading_it_all() {
        let distinct: Vec<String> = (0..10_000).map(|i| format!("SKU-{i}")).collect();
        let looked_at = std::cell::Cell::new(0usize);
        let counted = distinct.iter().map(|s| {
            looked_at.set(looked_at.get() + 1);
            s.as_str()
        });
        assert_eq!(unique_skus(counted).unwrap_err().code(), "INVALID_QUERY");
        assert_eq!(looked_at.get(), MAX_SKUS + 1);
        // Repeats of kept skus cost a comparison with at most the cap each, and pass.
        let repeats = std::iter::repeat_n("SKU-1", 10_000).chain(["SKU-2"]);
        assert_eq!(unique_skus(repeats).unwrap(), vec!["SKU-1", "SKU-2"]);
    }

    proptest::proptest! {
        /// The distinct skus in the order first named, or a 400 when there are none or too many.
        #[test]
        fn skus_keep_their_order_lose_duplicates_and_are_capped(
            list in proptest::collection::vec("[A-Z0-9-]{1,6}", 0..120),
        ) {
            let raw = list.join(",");
            let mut distinct: Vec<&str> = Vec::new();
            for sku in &list {
                if !distinct.contains(&sku.as_str()) {
                    distinct.push(sku);
                }
            }
            match parse_skus(Some(&raw)) {
                Ok(skus) => proptest::prop_assert_eq!(skus, distinct),
                Err(error) => {
                    proptest::prop_assert_eq!(error.code(), "INVALID_QUERY");
                    proptest::prop_assert!(distinct.is_empty() || distinct.len() > MAX_SKUS);
                }
            }
        }

        /// Whatever a client writes, an answer of at most the cap or a 400.
        #[test]
        fn any_query_is_a_bounded_list_or_a_400(raw in "\\PC{0,400}") {
            match parse_skus(Some(&raw)) {
                Ok(skus) => proptest::prop_assert!(!skus.is_empty() && skus.len() <= MAX_SKUS),
                Err(error) => proptest::prop_assert_eq!(error.status().as_u16(), 400),
            }
        }
    }
}
