//! The smallest honest `/mobile/home`: axum + one pooled reqwest client + `try_join!`, no policies
//! (no JWT, no deadline, no request id, no logging). The harness's "policies off" baseline.
//!
//! Usage: `minimal-bff LISTEN USERS_URL ORDERS_URL NOTIFICATIONS_URL`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

struct Upstreams {
    client: reqwest::Client,
    users: String,
    orders: String,
    notifications: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    display_name: String,
}

#[derive(Deserialize, Serialize)]
struct Order {
    id: u64,
    total: f64,
}

#[derive(Deserialize)]
struct Unread {
    count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Home {
    name: String,
    recent_orders: Vec<Order>,
    badge: u64,
}

async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: String) -> Result<T, StatusCode> {
    let response = client.get(url).send().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    if !response.status().is_success() {
        return Err(StatusCode::BAD_GATEWAY);
    }
    let bytes = response.bytes().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    serde_json::from_slice(&bytes).map_err(|_| StatusCode::BAD_GATEWAY)
}

async fn home(State(up): State<Arc<Upstreams>>) -> Result<Json<Home>, StatusCode> {
    let (profile, orders, unread) = futures::try_join!(
        get_json::<Profile>(&up.client, format!("{}/users/42", up.users)),
        get_json::<Vec<Order>>(&up.client, format!("{}/orders?user=42&limit=3", up.orders)),
        get_json::<Unread>(&up.client, format!("{}/unread-count/42", up.notifications)),
    )?;
    Ok(Json(Home { name: profile.display_name, recent_orders: orders, badge: unread.count }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    bff_core::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, users, orders, notifications] = <[String; 4]>::try_from(args)
        .map_err(|_| std::io::Error::other("usage: minimal-bff LISTEN USERS_URL ORDERS_URL NOTIFICATIONS_URL"))?;
    let client = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().map_err(std::io::Error::other)?;
    let state = Arc::new(Upstreams { client, users, orders, notifications });
    let app = Router::new().route("/mobile/home", get(home)).with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await
}
