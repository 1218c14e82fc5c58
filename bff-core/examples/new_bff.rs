//! A new BFF in one file: one endpoint, `GET /me`, that asks two upstreams at once under the
//! request deadline and answers exactly what its screen renders.
//!
//! ```sh
//! cargo run -p services-mock &      # the upstreams, on 7000..7006
//! cargo run -p bff-core --example new_bff -- --config bff-core/examples/new_bff.toml
//! ```
//!
//! Everything else a BFF does (JWT verification, request ids, timeouts, retries, breakers, access
//! logs, metrics, problem+json errors) comes from the gateway and its config.

use std::process::ExitCode;

use axum::Json;
use axum::extract::State;
use bff_core::cli::Spec;
use bff_core::routing::get;
use bff_core::{Access, App, BffError, ConfigError, Ctx, Gateway, Identity, Routes, encode};
use serde::{Deserialize, Serialize};

bff_core::upstreams! {
    /// The upstreams this BFF calls; a missing one is a config error naming it.
    struct Upstreams { users, orders }
}

/// What the users service answers (only the fields we read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    display_name: String,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
}

/// `GET /me`: the caller's name and their latest order ids.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Me {
    name: String,
    latest_orders: Vec<u64>,
}

async fn me(ctx: Ctx, user: Identity, State(up): State<Upstreams>) -> Result<Json<Me>, BffError> {
    let id = encode(user.subject());
    let (profile, orders) = ctx
        .fanout((
            up.users.get::<Profile>(format!("/users/{id}")).required(),
            up.orders.get::<Vec<Order>>(format!("/orders?user={id}&limit=3")).required(),
        ))
        .await?;
    Ok(Json(Me { name: profile.display_name, latest_orders: orders.into_iter().map(|o| o.id).collect() }))
}

/// The BFF: its routes, each with the access it requires, wrapped by the gateway.
fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let routes = Routes::new().route("/me", get(me), Access::scope("profile"));
    gateway.router(routes.with_state(Upstreams::from_gateway(gateway)?))
}

#[tokio::main]
async fn main() -> ExitCode {
    let spec = Spec::new("new-bff", "A BFF in one file.", "bff-core/examples/new_bff.toml");
    bff_core::cli::main(spec, app).await
}

#[cfg(test)]
#[path = "support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn me_is_the_profile_and_the_orders_at_once() {
        let bff = support::start(include_str!("new_bff.toml"), app).await;
        let answer =
            bff.http.get(format!("{}/me", bff.base)).bearer_auth(bff.token("42", "profile")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let me: serde_json::Value = answer.json().await.unwrap();
        assert!(me["name"].as_str().is_some_and(|n| !n.is_empty()), "{me}");
        assert_eq!(me["latestOrders"].as_array().map(Vec::len), Some(3), "{me}");
        // Without the scope: the gateway's 403, naming it.
        let refused = bff.http.get(format!("{}/me", bff.base)).bearer_auth(bff.token("42", "orders")).send().await;
        let refused = refused.unwrap();
        assert_eq!(refused.status(), 403);
        assert!(refused.text().await.unwrap().contains("profile"));
    }
}
