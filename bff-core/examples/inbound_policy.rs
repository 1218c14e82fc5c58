//! An inbound policy written by a BFF crate with the trait the gateway's own policies use
//! ([`bff_core::middleware::Guard`]): a caller may act on behalf of itself only, so an
//! `X-On-Behalf-Of` that names another user is a `403 NOT_YOUR_BEHALF` before the handler runs.
//!
//! ```sh
//! cargo run -p services-mock &
//! cargo run -p bff-core --example inbound_policy -- --config bff-core/examples/new_bff.toml
//! ```
//!
//! A [`Guard`] decides synchronously and costs nothing per request; an async step (a lookup, a
//! header on the way out) is a [`Middleware`](bff_core::middleware::Middleware), put on with
//! `Routes::middleware`. Both run after the gateway's edge, so the caller's [`Identity`] is there.

use std::process::ExitCode;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bff_core::cli::Spec;
use bff_core::middleware::Guard;
use bff_core::{Access, BffError, ConfigError, Gateway, Identity, Routes};

/// `X-On-Behalf-Of`, when sent, must be the caller's own id.
#[derive(Debug, Clone)]
struct OwnBehalf;

impl Guard for OwnBehalf {
    fn refuse(&self, request: &mut Request) -> Option<Response> {
        let named = request.headers().get("x-on-behalf-of")?;
        let own = request.extensions().get::<Identity>().map(|id| id.subject().as_bytes());
        if own == Some(named.as_bytes()) {
            return None;
        }
        let detail = "X-On-Behalf-Of names another user than the caller";
        Some(BffError::rejected(StatusCode::FORBIDDEN, "NOT_YOUR_BEHALF", detail).into_response())
    }
}

async fn whoami(user: Identity) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": user.subject() }))
}

fn app(gateway: &Gateway) -> Result<Router, ConfigError> {
    let routes = Routes::new().route("/whoami", get(whoami), Access::authenticated()).guard(OwnBehalf);
    gateway.router(routes)
}

#[tokio::main]
async fn main() -> ExitCode {
    let spec = Spec::new("inbound-policy", "A BFF with a policy of its own.", "bff-core/examples/new_bff.toml");
    bff_core::cli::main(spec, app).await
}

#[cfg(test)]
#[path = "support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn another_users_behalf_is_refused_before_the_handler() {
        let bff = support::start(include_str!("new_bff.toml"), app).await;
        let token = bff.token("42", "profile");
        let call = |behalf: Option<&str>| {
            let mut request = bff.http.get(format!("{}/whoami", bff.base)).bearer_auth(&token);
            if let Some(behalf) = behalf {
                request = request.header("x-on-behalf-of", behalf);
            }
            request.send()
        };
        assert_eq!(call(None).await.unwrap().status(), 200);
        assert_eq!(call(Some("42")).await.unwrap().status(), 200);
        let refused = call(Some("43")).await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "NOT_YOUR_BEHALF", "{problem}");
        // The gateway's own checks ran first: no token is its 401, not the guard's 403.
        let anonymous = bff.http.get(format!("{}/whoami", bff.base)).header("x-on-behalf-of", "43").send().await;
        assert_eq!(anonymous.unwrap().status(), 401);
    }
}
