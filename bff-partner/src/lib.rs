//! `bff-partner`: the public partner API. Versioned (`/v1`, `/v2`), API keys, frozen OpenAPI.
//!
//! `/v1` keeps working unchanged and announces its retirement with `Deprecation`, `Sunset` and a
//! `Link` to its successor on every response.

mod account;
mod records;
pub mod v1;
pub mod v2;

use axum::http::{HeaderName, HeaderValue, header};
use bff_core::routing::get;
use bff_core::{Access, App, ConfigError, Gateway, Routes};
use bytes::Bytes;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// When `/v1` was deprecated (RFC 9745 `Deprecation`: `@` + Unix seconds; 2026-12-01T00:00:00Z).
pub const V1_DEPRECATION: &str = "@1795996800";
/// When `/v1` stops answering (RFC 8594 `Sunset`).
pub const V1_SUNSET: &str = "Wed, 30 Jun 2027 23:59:59 GMT";
/// Where `/v1` callers should go.
pub const V1_SUCCESSOR: &str = "</v2/openapi.json>; rel=\"successor-version\"; type=\"application/openapi+json\"";

bff_core::upstreams! {
    /// The upstreams this BFF calls, resolved once at start-up.
    pub struct Upstreams { users, orders, catalog, inventory }
}

/// Declares the `X-Api-Key` security scheme the paths refer to.
pub struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components
                .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))));
        }
    }
}

/// The OpenAPI document of a version, as served and as committed under `openapi/`.
pub fn openapi_json(version: u8) -> Option<String> {
    let doc = match version {
        1 => v1::ApiV1::openapi(),
        2 => v2::ApiV2::openapi(),
        _ => return None,
    };
    doc.to_pretty_json().ok().map(|mut s| {
        s.push('\n');
        s
    })
}

fn document(version: u8) -> Routes {
    // Made once and shared by every answer: a request costs a reference count, not a copy.
    let body = Bytes::from(openapi_json(version).unwrap_or_default());
    Routes::new().route(
        &format!("/v{version}/openapi.json"),
        get(move || std::future::ready(([(header::CONTENT_TYPE, "application/json")], body.clone()))),
        Access::public(),
    )
}

/// The partner BFF's routes, wrapped by the gateway's layers.
pub fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    let v1 = v1::routes()
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("deprecation"),
            HeaderValue::from_static(V1_DEPRECATION),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("sunset"),
            HeaderValue::from_static(V1_SUNSET),
        ))
        .layer(SetResponseHeaderLayer::appending(header::LINK, HeaderValue::from_static(V1_SUCCESSOR)));
    let routes = v1.merge(v2::routes()).with_state(Upstreams::from_gateway(gateway)?);
    gateway.router(routes.merge(document(1)).merge(document(2)))
}
