//! `bff-core`: the Backend-for-Frontend framework.
//!
//! A BFF crate writes endpoints and DTOs; everything cross-cutting comes from here and is switched
//! on by configuration: named [`Upstream`]s, a parallel fan-out under one request deadline with
//! required and optional parts ([`Ctx::fanout`]), JWT identity ([`Identity`]) and the
//! [`Access`] each route declares, request ids, access logs, health endpoints, RFC 9457 errors
//! ([`BffError`]), and a server that bounds what each client may hold ([`Gateway::serve`]).
//!
//! ```no_run
//! use axum::{Json, extract::State};
//! use bff_core::routing::get;
//! use bff_core::{Access, App, BffError, ConfigError, Ctx, Gateway, Identity, Routes, Upstream, encode};
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
//! pub fn app(gateway: &Gateway) -> Result<App, ConfigError> {
//!     let state = Upstreams { users: gateway.upstream("users")? };
//!     gateway.router(Routes::new().route("/me", get(me), Access::scope("profile")).with_state(state))
//! }
//! ```

mod allocator;
pub mod app;
pub mod assets;
mod body;
mod carried;
pub mod cli;
pub mod config;
mod detached;
mod dispatch;
mod edge;
pub mod error;
pub mod extract;
pub mod fanout;
mod field;
pub mod idempotency;
pub mod identity;
mod json;
mod limit;
pub mod middleware;
pub mod observe;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod problem;
mod proxy;
mod redis_connection;
pub mod request;
mod route_keys;
mod routes;
pub mod routing;
mod session;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

/// Declares modules public with the `test-util` feature (the tests and benchmarks reach inside
/// them) and crate-private otherwise: a BFF uses what the crate root re-exports from them.
macro_rules! inside {
    ($($name:ident),*) => {$(
        #[cfg(any(test, feature = "test-util"))]
        pub mod $name;
        #[cfg(not(any(test, feature = "test-util")))]
        mod $name;
    )*};
}
inside!(policy, reload, serve, shape);
pub mod upstream;
mod websocket;

pub use app::{BuildError, Gateway, GatewayBuilder};
pub use config::{Config, ConfigError};
pub use error::{BffError, Problem};
pub use fanout::{Each, Fanout, Optional, Part, Required, each};
pub use policy::access::Access;
pub use policy::api_key::ApiClient;
pub use policy::auth::{AuthError, Identity};
pub use request::Ctx;
pub use routes::{App, Routes};
pub use serve::{Signal, TlsError, shutdown_signal};
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

/// The configuration of a property test whose cases are slow: `cases` by default, fewer than
/// proptest's 256; `PROPTEST_CASES` still sets how many, as for the others.
#[cfg(test)]
pub(crate) fn slow_proptest(cases: u32) -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    proptest::prelude::ProptestConfig { cases, ..Default::default() }
}
