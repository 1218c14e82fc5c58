//! Micro-benchmarks of the per-request hot paths: JWT verification, `fields=` projection, ETags,
//! the fan-out machinery over in-memory upstreams (no sockets), and problem+json rendering.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use bff_core::config::AuthConfig;
use bff_core::observe::metrics::Metrics;
use bff_core::policy::auth::JwtVerifier;
use bff_core::shape::{etag, fields};
use bff_core::upstream::{Body, UpstreamErrorKind};
use bff_core::{BffError, Ctx, Upstream, UpstreamError, UpstreamSettings};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use services_mock::{Keys, data};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The `[auth]` of the benchmarks: the mock issuer's, RS256 and ES256, with a token cache of
/// `token_cache_bytes` (0: none).
fn auth_config(token_cache_bytes: u64) -> AuthConfig {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[auth]\njwks_url = \"http://127.0.0.1:9/jwks.json\"\nissuer = \"{}\"\naudience = [\"{}\"]\n\
         algorithms = [\"RS256\", \"ES256\"]\nleeway = \"30s\"\ntoken_cache_bytes = {token_cache_bytes}\n",
        services_mock::services::auth::ISSUER,
        services_mock::services::auth::AUDIENCE,
    );
    let source = bff_core::config::ConfigSource { name: "hot_paths".into(), text };
    let config = bff_core::config::load(&source, &bff_core::config::Overrides::default()).expect("the config loads");
    config.auth.expect("an [auth] section")
}

fn jwt(c: &mut Criterion) {
    bff_core::install_crypto_provider();
    let keys = Keys::demo().expect("demo keys");
    let verifier = JwtVerifier::with_keys(&auth_config(0), keys.jwks());
    let cached = JwtVerifier::with_keys(&auth_config(1 << 20), keys.jwks());
    let rt = runtime();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = json!({"iss": "services-mock", "aud": "bff", "sub": "42", "scope": "profile orders", "iat": now, "exp": now + 3600});
    for (name, alg) in
        [("jwt_verify_rs256", jsonwebtoken::Algorithm::RS256), ("jwt_verify_es256", jsonwebtoken::Algorithm::ES256)]
    {
        let token = keys.sign(alg, &claims).expect("sign");
        assert!(rt.block_on(verifier.verify(&token)).is_ok());
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async { black_box(verifier.verify(black_box(&token)).await) })
        });
        c.bench_function(&format!("{name}_cached"), |b| {
            b.to_async(&rt).iter(|| async { black_box(cached.verify(black_box(&token)).await) })
        });
    }
}

fn shaping(c: &mut Criterion) {
    let home = json!({
        "name": data::user(42)["displayName"],
        "recentOrders": data::orders(42, 3).iter().map(|o| json!({"id": o["id"], "total": o["total"]})).collect::<Vec<_>>(),
        "badge": 4,
    });
    let set = fields::FieldSet::parse("name,recentOrders.id").expect("fields");
    c.bench_function("fields_project_home", |b| b.iter(|| fields::project(black_box(home.clone()), &set)));
    let feed = json!({ "cards": (1..=50).map(data::product).collect::<Vec<Value>>() });
    let set = fields::FieldSet::parse("cards.sku,cards.price").expect("fields");
    c.bench_function("fields_project_feed_50", |b| b.iter(|| fields::project(black_box(feed.clone()), &set)));
    let body = serde_json::to_vec(&data::user(42)).expect("json");
    c.bench_function("etag_profile", |b| b.iter(|| etag::etag(black_box(&body))));
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let metrics = Metrics::new();
    let answer = |name: &str, body: &'static str| {
        let service = tower::service_fn(move |_: http::Request<Body>| async move {
            Ok::<_, UpstreamError>(http::Response::new(Body::from(Bytes::from_static(body.as_bytes()))))
        });
        Upstream::from_service(name, UpstreamSettings::default(), service, &metrics)
    };
    let users = answer("users", r#"{"displayName":"Ada"}"#);
    let orders = answer("orders", r#"[{"id":1,"total":2.5},{"id":2,"total":3.5}]"#);
    let notes = answer("notifications", r#"{"count":4}"#);
    c.bench_function("fanout_3_in_memory", |b| {
        b.to_async(&rt).iter(|| async {
            let ctx = Ctx::detached(Duration::from_secs(2), 8);
            let result = ctx
                .fanout((
                    users.get::<Value>("/users/42").required(),
                    orders.get::<Value>("/orders?user=42&limit=3").required(),
                    notes.get::<Value>("/unread-count/42").optional(),
                ))
                .await;
            black_box(result.is_ok())
        })
    });
}

fn problem(c: &mut Criterion) {
    c.bench_function("problem_render_502", |b| {
        b.iter(|| {
            let error = BffError::from(UpstreamError::new(
                Arc::from("users"),
                UpstreamErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR),
            ));
            black_box(error.into_response())
        })
    });
}

criterion_group!(benches, jwt, shaping, fanout, problem);
criterion_main!(benches);
