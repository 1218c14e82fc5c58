//! Edge security: bad tokens, scopes, partner accounts, identity headers, request limits,
//! connection limits and log injection, tried as a client would.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bff_core::testing::{RawH2, frame};
use common::{Stack, StackBuilder, eventually, latency, problem};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use services_mock::services::auth::{AUDIENCE, ISSUER, Keys};
use services_mock::{Faults, Service};
use tokio::net::TcpStream;

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

fn partner() -> StackBuilder {
    StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the shipped mobile config accepts, with `changes` applied (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "42", "scope": "profile orders", "iat": now(), "exp": now() + 600,
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn signed(changes: Value) -> String {
    Keys::demo().unwrap().sign(Algorithm::RS256, &claims(changes)).unwrap()
}

fn upstream_calls(stack: &Stack) -> u64 {
    [Service::Users, Service::Orders, Service::Notifications].iter().map(|s| stack.stats(*s).requests).sum()
}

#[tokio::test]
async fn bad_tokens_are_refused_before_any_upstream_call() {
    let stack = mobile().start().await;
    assert_eq!(stack.get("/mobile/home").await.status(), 200);
    stack.reset_stats();
    let good = signed(json!({}));
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    // HS256 keyed with the RSA public key (alg confusion): the header names the RS256 kid.
    let hs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","kid":"demo-rs256"}"#);
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unknown_kid_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"nobody"}"#);
    let mut tampered = claims(json!({}));
    tampered["sub"] = json!("1");
    let tampered_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap());
    let signature = good.rsplit_once('.').unwrap().1;
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("none", None, 401, "AUTH_REQUIRED"),
        ("malformed", Some("not.a.jwt".into()), 401, "AUTH_MALFORMED"),
        ("tampered", Some(format!("{head}.{tampered_payload}.{signature}")), 401, "AUTH_INVALID_SIGNATURE"),
        ("alg none", Some(format!("{none_header}.{payload}.")), 401, "AUTH_MALFORMED"),
        ("HS256 with the RSA key", Some(format!("{hs_header}.{payload}.{signature}")), 401, "AUTH_MALFORMED"),
        ("expired", Some(signed(json!({"exp": now() - 3600}))), 401, "AUTH_EXPIRED"),
        ("not yet valid", Some(signed(json!({"nbf": now() + 3600}))), 401, "AUTH_INVALID_CLAIMS"),
        ("no iss", Some(signed(json!({"iss": null}))), 401, "AUTH_INVALID_CLAIMS"),
        ("wrong iss", Some(signed(json!({"iss": "someone-else"}))), 401, "AUTH_INVALID_CLAIMS"),
        ("no aud", Some(signed(json!({"aud": null}))), 401, "AUTH_INVALID_CLAIMS"),
        ("wrong aud", Some(signed(json!({"aud": "other"}))), 401, "AUTH_INVALID_CLAIMS"),
        ("unknown kid", Some(format!("{unknown_kid_header}.{payload}.{signature}")), 401, "AUTH_UNKNOWN_KEY"),
        ("oversized", Some(signed(json!({"pad": "x".repeat(9000)}))), 401, "AUTH_MALFORMED"),
        ("a line break in sub", Some(signed(json!({"sub": "4\n2"}))), 401, "AUTH_MALFORMED"),
    ];
    for (name, token, status, code) in cases {
        let mut request = stack.http.get(stack.bff.url("/mobile/home"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{name}");
        problem(response, status, code).await;
        assert_eq!(upstream_calls(&stack), 0, "{name} reached an upstream");
    }
    // Two bearer tokens, each valid: which one a reader takes is its choice, so neither is.
    let other = stack.mocks.token("7", "profile orders", 600);
    let two = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(&good).bearer_auth(other);
    let response = two.send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_request""#);
    problem(response, 400, "AUTH_AMBIGUOUS").await;
    assert_eq!(upstream_calls(&stack), 0, "two tokens reached an upstream");
    // A signed `exp` near the end of time is valid, not a panic.
    let far = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(signed(json!({"exp": u64::MAX - 1})));
    assert_eq!(far.send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_missing_scope_is_403_naming_it() {
    let stack = mobile().start().await;
    let profile_only = stack.mocks.token("42", "profile", 600);
    let response = stack.http.get(stack.bff.url("/mobile/orders/1")).bearer_auth(&profile_only).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="insufficient_scope", scope="orders""#);
    let body = problem(response, 403, "AUTH_INSUFFICIENT_SCOPE").await;
    assert!(body["detail"].as_str().unwrap().contains("`orders`"), "{body}");
    assert_eq!(upstream_calls(&stack), 0);
    // The same token reads the home screen, which needs `profile` only.
    let home = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(&profile_only).send().await.unwrap();
    assert_eq!(home.status(), 200);
    // With no scope at all, even the home screen is refused.
    let none = stack.mocks.token("42", "", 600);
    let response = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(none).send().await.unwrap();
    problem(response, 403, "AUTH_INSUFFICIENT_SCOPE").await;
}

#[tokio::test]
async fn personal_answers_are_private_and_vary_by_credential() {
    let stack = mobile().start().await;
    let response = stack.get("/mobile/home").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, no-cache");
    let vary = response.headers().get_all("vary");
    assert!(vary.iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("authorization")));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers().contains_key("etag"));
    // Over plain HTTP no `Strict-Transport-Security`, whatever the host: browsers ignore it there.
    let named = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token()).header("host", "bff.test");
    let named = named.send().await.unwrap();
    assert_eq!(named.status(), 200);
    assert!(!named.headers().contains_key("strict-transport-security"), "{:?}", named.headers());
    // Revalidation keeps working.
    let etag = response.headers()["etag"].clone();
    let again = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token()).header("if-none-match", etag);
    assert_eq!(again.send().await.unwrap().status(), 304);
}

#[tokio::test]
async fn upstreams_get_the_verified_identity_never_the_clients() {
    let stack = mobile().start().await;
    let response = stack
        .http
        .get(stack.bff.url("/mobile/home"))
        .bearer_auth(stack.token())
        .header("x-user-id", "1")
        .header("x-user-scopes", "admin")
        .header("x-partner-account", "acct-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for service in [Service::Users, Service::Orders, Service::Notifications] {
        let headers = stack.stats(service).last_headers;
        assert_eq!(headers.get("x-user-id").map(String::as_str), Some("42"), "{service}");
        assert_eq!(headers.get("x-user-scopes").map(String::as_str), Some("orders profile"), "{service}");
        assert!(!headers.contains_key("x-partner-account"), "{service}");
    }
}

async fn partner_get(stack: &Stack, path: &str) -> reqwest::Response {
    stack.http.get(stack.bff.url(path)).header("x-api-key", "demo-pro-key").send().await.unwrap()
}

#[tokio::test]
async fn a_partner_sees_only_its_accounts_data() {
    let stack = partner().start().await;
    // Users 1-100 are the demo account's.
    assert_eq!(partner_get(&stack, "/v2/orders?user=42").await.status(), 200);
    assert_eq!(stack.stats(Service::Orders).last_headers.get("x-partner-account").map(String::as_str), Some("demo"));
    for path in ["/v2/orders?user=142", "/v1/orders?user=142"] {
        problem(partner_get(&stack, path).await, 404, "NOT_FOUND").await;
    }
    // An order of another account's user is as absent as one that does not exist.
    let first_order = |user: u64| {
        let url = format!("{}/orders?user={user}&limit=1", stack.mocks.url(Service::Orders));
        let http = stack.http.clone();
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap()[0]["id"].as_u64().unwrap() }
    };
    let theirs = first_order(142).await;
    for version in ["v1", "v2"] {
        problem(partner_get(&stack, &format!("/{version}/orders/{theirs}")).await, 404, "NOT_FOUND").await;
    }
    let ours = first_order(42).await;
    assert_eq!(partner_get(&stack, &format!("/v2/orders/{ours}")).await.status(), 200);
    // Writing for another account's user is refused the same way, and nothing is written.
    let before = stack.stats(Service::Orders).requests;
    let write = stack
        .http
        .post(stack.bff.url("/v2/orders"))
        .header("x-api-key", "demo-pro-key")
        .header("idempotency-key", "k-other-account")
        .json(&json!({"user": "142", "items": [{"sku": "SKU-0001", "qty": 1}]}))
        .send()
        .await
        .unwrap();
    problem(write, 404, "NOT_FOUND").await;
    assert_eq!(stack.stats(Service::Orders).requests, before);
}

#[tokio::test]
async fn a_partner_without_the_scope_is_403() {
    let stack = partner().set("api_keys.clients.demo-pro.scopes", "[]").start().await;
    let response = partner_get(&stack, "/v2/orders?user=42").await;
    assert!(!response.headers().contains_key("www-authenticate"));
    problem(response, 403, "AUTH_INSUFFICIENT_SCOPE").await;
    // Products need no scope, only a key.
    assert_eq!(partner_get(&stack, "/v2/products/SKU-0001").await.status(), 200);
}

#[tokio::test]
async fn over_long_uris_and_echoed_input_are_bounded() {
    let stack = mobile().start().await;
    let long = format!("/mobile/orders/{}", "9".repeat(9000));
    let response = stack.get(&long).await;
    problem(response, 414, "URI_TOO_LONG").await;
    // A long id within the URI limit is echoed bounded, without its control characters.
    let id = format!("{}%0aFORGED", "7".repeat(2000));
    let body = problem(stack.get(&format!("/mobile/orders/{id}")).await, 404, "NOT_FOUND").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.len() <= bff_core::problem::MAX_DETAIL_BYTES && !detail.contains('\n'), "{detail:?}");
}

#[tokio::test]
async fn fields_are_looked_at_only_after_authentication() {
    let stack = mobile().start().await;
    let response = stack.http.get(stack.bff.url("/mobile/home?fields=%00nope")).send().await.unwrap();
    problem(response, 401, "AUTH_REQUIRED").await;
}

/// Test signing keys of our own (not the mock's): a P-256 key and an Ed25519 key.
const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVZGtQ95IFV2QNwjQ
nohMWksrUAdQ5UNl2lavYnqxl3ShRANCAARQqwxZoK8kwTUKGBIkzECqw9L1ADBE
JtbUDIe121M4zVk2FU7uccopJ+ZXU806cmvmN2UUkn9eaasa71MslE8B
-----END PRIVATE KEY-----
";
const ED_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDhVBO1bM9aw+k4EO3u5uMBq+R+M2v3Dla0/7SgV/bvx
-----END PRIVATE KEY-----
";

struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    key: jsonwebtoken::EncodingKey,
}

impl TestKey {
    fn ec() -> Self {
        Self {
            kid: "ec-1",
            alg: Algorithm::ES256,
            key: jsonwebtoken::EncodingKey::from_ec_pem(EC_KEY.as_bytes()).unwrap(),
        }
    }

    fn ed() -> Self {
        Self {
            kid: "ed-1",
            alg: Algorithm::EdDSA,
            key: jsonwebtoken::EncodingKey::from_ed_pem(ED_KEY.as_bytes()).unwrap(),
        }
    }

    fn jwk(&self) -> jsonwebtoken::jwk::Jwk {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk.common.key_algorithm = Some(match self.alg {
            Algorithm::EdDSA => jsonwebtoken::jwk::KeyAlgorithm::EdDSA,
            _ => jsonwebtoken::jwk::KeyAlgorithm::ES256,
        });
        jwk
    }

    fn sign(&self, typ: &str, changes: Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, &claims(changes), &self.key).unwrap()
    }
}

type SharedJwks = std::sync::Arc<std::sync::Mutex<Vec<jsonwebtoken::jwk::Jwk>>>;

/// A JWKS endpoint serving whatever `keys` holds at the time.
async fn jwks_server(keys: SharedJwks) -> bff_core::testing::TestServer {
    let route = axum::routing::get(move || {
        let keys = keys.lock().unwrap().clone();
        async move { axum::Json(jsonwebtoken::jwk::JwkSet { keys }) }
    });
    bff_core::testing::TestServer::start(axum::Router::new().route("/jwks.json", route)).await
}

async fn home_status(stack: &Stack, token: &str) -> (u16, String) {
    let response = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, body)
}

/// The first token after a start makes the BFF fetch the issuer's keys. A client that resets its
/// stream meanwhile (HTTP/2's rapid reset) or closes its connection must not cancel the fetch:
/// were it cancelled, every token would be refused (`503 AUTH_UNAVAILABLE`) until
/// `auth.jwks_min_refresh` had passed, and one client doing it again and again, with a forged
/// token, would keep a freshly started BFF from signing anyone in.
#[tokio::test]
async fn a_client_that_goes_away_does_not_take_the_key_fetch_with_it() {
    let stack = mobile().set("auth.jwks_min_refresh", "1h").start().await;
    stack.set_faults(Service::Auth, latency(500)).await;
    let token = stack.token();
    let forged_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"forged"}"#);
    let forged = format!("Bearer {forged_header}.{}", token.split_once('.').unwrap().1);
    let mut h2 = RawH2::handshake(TcpStream::connect(stack.bff.addr).await.unwrap(), &[]).await.unwrap();
    h2.get(1, "/mobile/home", &[("authorization", &forged)]).await.unwrap();
    let fetching = eventually(Duration::from_secs(10), || async { stack.stats(Service::Auth).in_flight > 0 }).await;
    assert!(fetching, "the forged token's unknown kid makes the BFF fetch the keys");
    h2.send(frame::RST_STREAM, 0, 1, &8u32.to_be_bytes()).await.unwrap();
    drop(h2);
    stack.set_faults(Service::Auth, Faults::default()).await;
    let (status, body) = home_status(&stack, &token).await;
    assert_eq!(status, 200, "verified with the keys the abandoned fetch brought: {body}");
    assert_eq!(stack.stats(Service::Auth).requests, 1, "one fetch");
}

#[tokio::test]
async fn keys_rotate_without_a_restart_and_a_broken_jwks_keeps_the_old_ones() {
    let (ec, ed) = (TestKey::ec(), TestKey::ed());
    let published = SharedJwks::default();
    published.lock().unwrap().push(ec.jwk());
    let jwks = jwks_server(published.clone()).await;
    let stack = mobile()
        .set("auth.jwks_url", &jwks.url("/jwks.json"))
        .set("auth.algorithms", r#"["ES256", "EdDSA"]"#)
        .set("auth.jwks_min_refresh", "1ms")
        .start()
        .await;
    assert_eq!(home_status(&stack, &ec.sign("JWT", json!({}))).await.0, 200);
    // The issuer adds an EdDSA key: tokens signed with it are accepted at once.
    published.lock().unwrap().push(ed.jwk());
    let (status, body) = home_status(&stack, &ed.sign("JWT", json!({"sub": "41"}))).await;
    assert_eq!(status, 200, "{body}");
    // The issuer breaks and publishes nothing: an unknown kid forces a refresh, which keeps the keys.
    published.lock().unwrap().clear();
    let unknown = TestKey { kid: "gone", ..TestKey::ec() };
    assert_eq!(home_status(&stack, &unknown.sign("JWT", json!({}))).await.0, 401);
    let (status, body) = home_status(&stack, &ed.sign("JWT", json!({"sub": "43"}))).await;
    assert_eq!(status, 200, "a fresh token with a kept key: {body}");
}

#[tokio::test]
async fn eddsa_is_accepted_only_when_listed_and_typ_is_checked_when_configured() {
    let (ec, ed) = (TestKey::ec(), TestKey::ed());
    let published = SharedJwks::default();
    published.lock().unwrap().extend([ec.jwk(), ed.jwk()]);
    let jwks = jwks_server(published).await;
    let stack = mobile()
        .set("auth.jwks_url", &jwks.url("/jwks.json"))
        .set("auth.algorithms", r#"["ES256"]"#)
        .set("auth.typ", "at+jwt")
        .start()
        .await;
    let (status, body) = home_status(&stack, &ed.sign("at+jwt", json!({}))).await;
    assert_eq!(status, 401, "EdDSA is not listed: {body}");
    let (status, body) = home_status(&stack, &ec.sign("JWT", json!({}))).await;
    assert_eq!(status, 401, "an ID-token `typ` is not an access token: {body}");
    assert!(body.contains("AUTH_MALFORMED"), "{body}");
    assert_eq!(home_status(&stack, &ec.sign("at+jwt", json!({}))).await.0, 200);
    assert_eq!(home_status(&stack, &ec.sign("application/at+jwt", json!({"sub": "41"}))).await.0, 200);
}

#[tokio::test]
async fn body_limits_apply_per_route() {
    let stack = mobile().set("routes./mobile/orders.max_body_bytes", "64").start().await;
    let order =
        json!({"items": [{"sku": "SKU-0001", "qty": 1}, {"sku": "SKU-0002", "qty": 1}, {"sku": "SKU-0003", "qty": 1}]});
    let post = |body: &Value| {
        stack
            .http
            .post(stack.bff.url("/mobile/orders"))
            .bearer_auth(stack.token())
            .header("idempotency-key", "k-limits-1")
            .json(body)
    };
    let body = problem(post(&order).send().await.unwrap(), 413, "BODY_TOO_LARGE").await;
    assert!(body["detail"].as_str().unwrap().contains("64 bytes"), "{body}");
    assert_eq!(stack.stats(Service::Orders).requests, 0);
    // Under the route's limit it is taken.
    let small = json!({"items": [{"sku": "SKU-0001", "qty": 1}]});
    assert_eq!(post(&small).send().await.unwrap().status(), 201);
}

/// A catalog whose product answers are public for a minute but differ per user, saying so
/// with `Vary: X-User-Id`.
async fn per_user_catalog() -> bff_core::testing::TestServer {
    let route = axum::routing::get(|headers: axum::http::HeaderMap| async move {
        let user = headers.get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned();
        let product = json!({"sku": "SKU-0001", "name": format!("priced for {user}"), "price": 1.0});
        ([("cache-control", "public, max-age=60"), ("vary", "X-User-Id")], axum::Json(product))
    });
    bff_core::testing::TestServer::start(axum::Router::new().route("/products/{sku}", route)).await
}

#[tokio::test]
async fn a_cached_answer_that_varies_by_user_reaches_only_its_user() {
    let catalog = per_user_catalog().await;
    let stack = mobile().set("upstreams.catalog.url", &catalog.url("")).start().await;
    let name_for = |user: &'static str| {
        let request = stack.http.get(stack.bff.url("/mobile/products/SKU-0001"));
        let request = request.bearer_auth(stack.mocks.token(user, "profile", 600));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["name"].clone() }
    };
    for _ in 0..2 {
        assert_eq!(name_for("42").await, "priced for 42");
        assert_eq!(name_for("43").await, "priced for 43", "user 43 was given user 42's answer");
    }
    // Still a cache: each user's second read came from memory.
    let metrics = stack.admin_text("/metrics").await;
    assert!(metrics.contains(r#"bff_upstream_cache_total{upstream="catalog",result="hit"} 2"#), "{metrics}");
}
