//! An inbound policy written by a BFF crate with the trait the gateway's own policies use
//! ([`bff_core::middleware::Filter`]): a caller may act on behalf of itself only, so an
//! `X-On-Behalf-Of` that names another user is a `403 NOT_YOUR_BEHALF` before the handler runs,
//! and an answer given on someone's behalf says so in `X-Acting-For`.
//!
//! ```sh
//! cargo run -p services-mock &
//! cargo run -p bff-core --example inbound_policy -- --config bff-core/examples/new_bff.toml
//! ```
//!
//! A [`Filter`] decides synchronously and costs no allocation; a step that must await something
//! (a lookup) is a [`Middleware`](bff_core::middleware::Middleware), put on with
//! `Routes::middleware`. Both run after the gateway's edge, so the caller's [`Identity`] is there.

use std::process::ExitCode;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bff_core::cli::Spec;
use bff_core::middleware::Filter;
use bff_core::routing::get;
use bff_core::{Access, App, BffError, ConfigError, Gateway, Identity, Routes};

/// `X-On-Behalf-Of`, when sent, must be the caller's own id.
#[derive(Debug, Clone)]
struct OwnBehalf;

impl Filter for OwnBehalf {
    /// The user the request acts for, when it named one, for the response.
    type State = Option<HeaderValue>;

    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
        let Some(named) = request.headers().get("x-on-behalf-of") else { return Ok(None) };
        let own = request.extensions().get::<Identity>().map(|id| id.subject().as_bytes());
        if own == Some(named.as_bytes()) {
            return Ok(Some(named.clone()));
        }
        let detail = "X-On-Behalf-Of names another user than the caller";
        Err(BffError::rejected(StatusCode::FORBIDDEN, "NOT_YOUR_BEHALF", detail).into_response())
    }

    fn on_response(acting_for: Self::State, response: &mut Response) {
        if let Some(user) = acting_for {
            response.headers_mut().insert("x-acting-for", user);
        }
    }
}

async fn whoami(user: Identity) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": user.subject() }))
}

fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let routes = Routes::new().route("/whoami", get(whoami), Access::authenticated()).filter(OwnBehalf);
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
        let plain = call(None).await.unwrap();
        assert_eq!(plain.status(), 200);
        assert!(!plain.headers().contains_key("x-acting-for"));
        let own = call(Some("42")).await.unwrap();
        assert_eq!(own.status(), 200);
        assert_eq!(own.headers()["x-acting-for"], "42");
        let refused = call(Some("43")).await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "NOT_YOUR_BEHALF", "{problem}");
        // The gateway's own checks ran first: no token is its 401, not the filter's 403.
        let anonymous = bff.http.get(format!("{}/whoami", bff.base)).header("x-on-behalf-of", "43").send().await;
        assert_eq!(anonymous.unwrap().status(), 401);
    }
}
