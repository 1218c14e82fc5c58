//! `bff-core`: the Backend-for-Frontend framework.
//!
//! A BFF crate writes endpoints and DTOs; everything cross-cutting comes from here and is switched
//! on by configuration: named [`Upstream`]s, a parallel fan-out under one request deadline with
//! required and optional parts ([`Ctx::fanout`]), JWT identity ([`Identity`]), request ids, access
//! logs, health endpoints and RFC 9457 errors ([`BffError`]).
//!
//! ```no_run
//! use axum::{Json, Router, extract::State, routing::get};
//! use bff_core::{BffError, ConfigError, Ctx, Gateway, Identity, Upstream, encode};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone)]
//! struct Upstreams { users: Upstream }
//! #[derive(Deserialize)] #[serde(rename_all = "camelCase")]
//! struct Profile { display_name: String }
//! #[derive(Serialize)]
//! struct Me { name: String }
//!
//! async fn me(ctx: Ctx, user: Identity, State(u): State<Upstreams>) -> Result<Json<Me>, BffError> {
//!     let profile = ctx.fetch(u.users.get::<Profile>(format!("/users/{}", encode(user.subject())))).await?;
//!     Ok(Json(Me { name: profile.display_name }))
//! }
//!
//! pub fn app(gateway: &Gateway) -> Result<Router, ConfigError> {
//!     let state = Upstreams { users: gateway.upstream("users")? };
//!     gateway.router(Router::new().route("/me", get(me)).with_state(state))
//! }
//! ```

#![warn(missing_docs)]

pub mod app;
mod body;
pub mod cli;
pub mod config;
mod edge;
pub mod error;
pub mod extract;
pub mod fanout;
mod middleware;
pub mod observe;
pub mod policy;
pub mod problem;
pub mod request;
mod route_keys;
pub mod shape;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod upstream;

pub use app::{BuildError, Gateway, GatewayBuilder, serve, shutdown_signal};
pub use config::{Config, ConfigError};
pub use error::{BffError, Problem};
pub use fanout::{Each, Fanout, Optional, Part, Required, each};
pub use policy::api_key::ApiClient;
pub use policy::auth::{AuthError, Identity};
pub use request::Ctx;
pub use upstream::{Call, Reply, Streamed, Upstream, UpstreamError, UpstreamSettings, encode, encode_list};

/// Installs `ring` as the process's TLS provider (rustls) and JWT signature verifier.
///
/// For applications (the BFF binaries call it first thing): the library itself installs nothing
/// process-wide; its own TLS clients use `ring` explicitly. Idempotent: a second call (or a
/// provider installed by someone else) is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    policy::auth::install_ring_jwt_verifier();
}
