//! orders: `GET /orders?user={id}&limit={n}` (newest first), `GET /orders/{id}`, and
//! `POST /orders` (`{user, items: [{sku, qty}]}` → 201; an `Idempotency-Key` makes a repeat
//! answer the same order instead of placing a second one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::data;

/// The most lines one order may have.
const MAX_LINES: usize = 50;
/// The most units of one line.
const MAX_QTY: u64 = 99;
/// The longest `Idempotency-Key`, and how many keys are remembered.
const MAX_KEY_LEN: usize = 255;
const MAX_KEYS: usize = 100_000;

/// Orders placed since start, per user (oldest first), and the idempotency keys seen.
#[derive(Debug, Default)]
struct Book {
    placed: HashMap<u64, Vec<Value>>,
    /// Key → (the request it came with, the order it placed).
    keys: HashMap<String, (Value, Value)>,
}

type Shared = Arc<Mutex<Book>>;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/orders", get(orders_list).post(order_create))
        .route("/orders/{id}", get(order_get))
        .with_state(Shared::default())
}

#[derive(Deserialize)]
struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
}

async fn orders_list(State(book): State<Shared>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(query)) = query else {
        return super::error(StatusCode::BAD_REQUEST, "invalid query");
    };
    let Some(raw) = query.user else {
        return super::error(StatusCode::BAD_REQUEST, "missing `user` query parameter");
    };
    let Some(user) = data::user_id(&raw) else {
        return super::not_found("user", &raw);
    };
    let limit = super::limit(query.limit);
    let book = book.lock().unwrap_or_else(PoisonError::into_inner);
    let placed = book.placed.get(&user).into_iter().flatten().rev().cloned();
    let list: Vec<Value> = placed.chain(data::orders(user, limit)).take(limit).collect();
    Json(list).into_response()
}

async fn order_get(State(book): State<Shared>, Path(id): Path<String>) -> Response {
    if let Some((user, n)) = data::order_id(&id) {
        return Json(data::order(user, n)).into_response();
    }
    let placed = data::parse_order_id(&id).and_then(|(user, n)| {
        let book = book.lock().unwrap_or_else(PoisonError::into_inner);
        let index = usize::try_from(n - data::order_count(user)).ok()?.checked_sub(1)?;
        book.placed.get(&user)?.get(index).cloned()
    });
    match placed {
        Some(order) => Json(order).into_response(),
        None => super::not_found("order", &id),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    user: Value,
    items: Vec<Line>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    sku: String,
    qty: u64,
}

async fn order_create(
    State(book): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        return super::error(StatusCode::BAD_REQUEST, "the body is not a JSON order");
    };
    let Ok(order) = serde_json::from_value::<NewOrder>(request.clone()) else {
        return super::error(StatusCode::BAD_REQUEST, "expected {\"user\", \"items\": [{\"sku\", \"qty\"}]}");
    };
    let user_text = match &order.user {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let Some(user) = data::user_id(&user_text) else {
        return super::not_found("user", &user_text);
    };
    if order.items.is_empty() || order.items.len() > MAX_LINES {
        return super::error(StatusCode::UNPROCESSABLE_ENTITY, format!("an order has 1 to {MAX_LINES} lines"));
    }
    let mut lines = Vec::with_capacity(order.items.len());
    for line in &order.items {
        let Some(index) = data::sku_index(&line.sku) else {
            return super::error(StatusCode::UNPROCESSABLE_ENTITY, format!("unknown sku `{}`", line.sku));
        };
        if !(1..=MAX_QTY).contains(&line.qty) {
            return super::error(StatusCode::UNPROCESSABLE_ENTITY, format!("qty must be 1 to {MAX_QTY}"));
        }
        lines.push((index, line.qty));
    }
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Some(key.to_owned()),
        Some(_) => return super::error(StatusCode::BAD_REQUEST, "invalid Idempotency-Key"),
    };

    let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(key) = &key
        && let Some((first, placed)) = book.keys.get(key)
    {
        if *first != request {
            let message = "this Idempotency-Key was used with a different order";
            return super::error(StatusCode::UNPROCESSABLE_ENTITY, message);
        }
        let mut replay = (StatusCode::CREATED, Json(placed.clone())).into_response();
        replay.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return replay;
    }
    let so_far = book.placed.get(&user).map_or(0, Vec::len) as u64;
    let n = data::order_count(user) + so_far + 1;
    if n > data::MAX_ORDERS_PER_USER || book.keys.len() >= MAX_KEYS {
        return super::error(StatusCode::INSUFFICIENT_STORAGE, "this mock holds no more orders");
    }
    let placed = data::placed_order(user, n, &lines);
    book.placed.entry(user).or_default().push(placed.clone());
    if let Some(key) = key {
        book.keys.insert(key, (request, placed.clone()));
    }
    (StatusCode::CREATED, Json(placed)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn a_placed_order_is_listed_first_and_readable_and_a_keyed_repeat_places_nothing() {
        let app = router();
        let order = json!({"user": "42", "items": [{"sku": "SKU-0003", "qty": 2}]});
        let (status, headers, first) = send(&app, "POST", "/orders", Some("k-1"), Some(order.clone())).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(headers.get("idempotent-replayed").is_none());
        let id = first["id"].as_u64().unwrap();
        assert_eq!(id, 42 * 100 + data::order_count(42) + 1);
        assert_eq!(first["items"][0]["quantity"], 2);
        assert_eq!(first["total"], json!(data::product(3)["price"].as_f64().unwrap() * 2.0));

        let (status, headers, again) = send(&app, "POST", "/orders", Some("k-1"), Some(order.clone())).await;
        assert_eq!((status, &again), (StatusCode::CREATED, &first));
        assert_eq!(headers["idempotent-replayed"], "true");
        let (status, _, _) = send(
            &app,
            "POST",
            "/orders",
            Some("k-1"),
            Some(json!({"user": 42, "items": [{"sku": "SKU-0004", "qty": 1}]})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a key reused for another order");

        let (_, _, list) = send(&app, "GET", "/orders?user=42&limit=50", None, None).await;
        assert_eq!(list.as_array().unwrap().len() as u64, data::order_count(42) + 1);
        assert_eq!(list[0], first);
        let (status, _, got) = send(&app, "GET", &format!("/orders/{id}"), None, None).await;
        assert_eq!((status, got), (StatusCode::OK, first));

        // Without a key, a repeat is a second order.
        let (_, _, second) = send(&app, "POST", "/orders", None, Some(order.clone())).await;
        assert_eq!(second["id"].as_u64().unwrap(), id + 1);
    }

    #[tokio::test]
    async fn bad_orders_are_refused() {
        let app = router();
        let cases = [
            (json!({"user": "42", "items": []}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"user": "42", "items": [{"sku": "SKU-9999", "qty": 1}]}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"user": "42", "items": [{"sku": "SKU-0001", "qty": 0}]}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"user": "0", "items": [{"sku": "SKU-0001", "qty": 1}]}), StatusCode::NOT_FOUND),
            (json!({"items": [{"sku": "SKU-0001", "qty": 1}]}), StatusCode::BAD_REQUEST),
        ];
        for (body, expected) in cases {
            assert_eq!(send(&app, "POST", "/orders", None, Some(body.clone())).await.0, expected, "{body}");
        }
        assert_eq!(send(&app, "GET", &format!("/orders/{}", 42 * 100 + 99), None, None).await.0, StatusCode::NOT_FOUND);
    }
}
