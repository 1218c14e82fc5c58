//! An outbound layer for one upstream, plugged in through the gateway builder: every attempt to
//! `orders` carries `X-Signature`, a SHA-256 over a shared secret, the method, the path and the
//! request id, as a signing upstream would check. It is a tower layer over [`Attempt`], so it
//! sits just around the HTTP client: after the call headers are set (the signature covers the
//! request id) and once per attempt (a retry is signed again), inside the per-try timeout.
//!
//! ```sh
//! cargo run -p services-mock &
//! cargo run -p bff-core --example outbound_layer -- --config bff-core/examples/new_bff.toml
//! ```

use std::process::ExitCode;

use axum::Json;
use axum::extract::State;
use bff_core::cli::Spec;
use bff_core::routing::get;
use bff_core::upstream::{Attempt, Body, BoxError};
use bff_core::{Access, App, BffError, ConfigError, Ctx, Gateway, GatewayBuilder, Identity, Routes, encode};
use http::{HeaderValue, Request};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

/// Signs each request with `secret`.
#[derive(Clone)]
struct Sign {
    secret: &'static str,
}

impl Layer<Attempt> for Sign {
    type Service = Signed;

    fn layer(&self, inner: Attempt) -> Signed {
        Signed { secret: self.secret, inner }
    }
}

#[derive(Clone)]
struct Signed {
    secret: &'static str,
    inner: Attempt,
}

/// The signature of a request: hex SHA-256 of the secret, method, path and query, request id.
fn signature(secret: &str, request: &Request<Body>) -> String {
    let mut digest = Sha256::new();
    digest.update(secret);
    digest.update(request.method().as_str());
    digest.update(request.uri().path_and_query().map_or("/", |p| p.as_str()));
    digest.update(request.headers().get("x-request-id").map_or(&b""[..], HeaderValue::as_bytes));
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Service<Request<Body>> for Signed {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let signed = HeaderValue::from_str(&signature(self.secret, &request));
        let inner = self.inner.clone();
        Box::pin(async move {
            request.headers_mut().insert("x-signature", signed?);
            inner.oneshot(request).await
        })
    }
}

bff_core::upstreams! {
    struct Upstreams { orders }
}

async fn orders(ctx: Ctx, user: Identity, State(up): State<Upstreams>) -> Result<Json<serde_json::Value>, BffError> {
    let path = format!("/orders?user={}&limit=2", encode(user.subject()));
    Ok(Json(ctx.fetch(up.orders.get::<serde_json::Value>(path)).await?))
}

fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let routes = Routes::new().route("/orders", get(orders), Access::scope("orders"));
    gateway.router(routes.with_state(Upstreams::from_gateway(gateway)?))
}

/// What the binary adds to its gateway: the signing layer on `orders` (the secret would come
/// from the environment or a secret store).
fn gateway(builder: GatewayBuilder) -> GatewayBuilder {
    builder.upstream_layer("orders", Sign { secret: "example-secret" })
}

#[tokio::main]
async fn main() -> ExitCode {
    let spec = Spec::new("outbound-layer", "A BFF that signs its calls.", "bff-core/examples/new_bff.toml");
    bff_core::cli::main(spec.gateway(gateway), app).await
}

#[cfg(test)]
#[path = "support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use services_mock::Service as Mock;

    use super::*;

    #[tokio::test]
    async fn every_call_to_orders_carries_its_signature() {
        let bff = support::start_with(include_str!("new_bff.toml"), gateway, app).await;
        let answer = bff
            .http
            .get(format!("{}/orders", bff.base))
            .bearer_auth(bff.token("42", "orders"))
            .header("x-request-id", "req-1")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let seen = bff.mocks.service(Mock::Orders).stats.snapshot().last_headers;
        let mut expected = Request::get("/orders?user=42&limit=2").body(Body::empty()).unwrap();
        expected.headers_mut().insert("x-request-id", HeaderValue::from_static("req-1"));
        assert_eq!(seen.get("x-signature"), Some(&signature("example-secret", &expected)), "{seen:?}");
        // The layer is for `orders` only, and a layer for an upstream the config lacks is refused.
        let config = bff_core::config::load(
            &bff_core::config::ConfigSource { name: "t.toml".into(), text: include_str!("new_bff.toml").into() },
            &bff_core::config::Overrides::default(),
        )
        .unwrap();
        let refused = Gateway::builder(config).upstream_layer("payments", Sign { secret: "s" }).build().await;
        assert!(refused.unwrap_err().to_string().contains("upstreams.payments"));
    }
}
