//! auth: `POST /token` with JSON issues a signed JWT (demo use only); `GET /.well-known/jwks.json`
//! publishes the keys. The OpenID Provider's endpoints are in `oidc`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::oidc::Idp;

/// The `iss` claim of every token the mock issues.
pub const ISSUER: &str = "services-mock";
/// The default `aud` claim.
pub const AUDIENCE: &str = "bff";
/// The `kid` of the RS256 demo key.
pub const RS256_KID: &str = "demo-rs256";
/// The `kid` of the ES256 demo key.
pub const ES256_KID: &str = "demo-es256";

const RS256_PEM: &str = include_str!("../../keys/demo-rs256.pem");
const ES256_PEM: &str = include_str!("../../keys/demo-es256.pem");

/// The demo signing keys and the JWKS that publishes them.
#[derive(Debug)]
pub struct Keys {
    rs256: EncodingKey,
    es256: EncodingKey,
    jwks: JwkSet,
}

impl Keys {
    /// Loads the demo keys shipped with the mock.
    pub fn demo() -> Result<Self, jsonwebtoken::errors::Error> {
        let rs256 = EncodingKey::from_rsa_pem(RS256_PEM.as_bytes())?;
        let es256 = EncodingKey::from_ec_pem(ES256_PEM.as_bytes())?;
        let mut keys = Vec::new();
        for (key, alg, kid, key_alg) in [
            (&rs256, Algorithm::RS256, RS256_KID, KeyAlgorithm::RS256),
            (&es256, Algorithm::ES256, ES256_KID, KeyAlgorithm::ES256),
        ] {
            let mut jwk = Jwk::from_encoding_key(key, alg)?;
            jwk.common.key_id = Some(kid.to_owned());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(key_alg);
            keys.push(jwk);
        }
        Ok(Self { rs256, es256, jwks: JwkSet { keys } })
    }

    /// The public keys, as `GET /.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs `claims` with the key for `alg` (RS256 or ES256).
    pub fn sign(&self, alg: Algorithm, claims: &impl Serialize) -> Result<String, String> {
        let (key, kid) = match alg {
            Algorithm::RS256 => (&self.rs256, RS256_KID),
            Algorithm::ES256 => (&self.es256, ES256_KID),
            other => return Err(format!("unsupported alg {other:?}; use RS256 or ES256")),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| e.to_string())
    }
}

/// The body of `POST /token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The subject (user id).
    pub sub: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Lifetime in seconds; negative yields an already expired token.
    #[serde(default = "default_ttl")]
    pub ttl_s: i64,
    /// `RS256` (default) or `ES256`.
    #[serde(default)]
    pub alg: Option<String>,
    /// The `aud` claim; defaults to [`AUDIENCE`].
    #[serde(default)]
    pub aud: Option<String>,
}

fn default_ttl() -> i64 {
    3600
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    scope: &'a str,
    iat: i64,
    exp: i64,
}

pub(crate) fn router(idp: Arc<Idp>) -> Router {
    Router::new()
        .route("/token", post(token_create))
        .route("/.well-known/jwks.json", get(jwks_get))
        .with_state(idp.clone())
        .merge(super::oidc::router(idp))
}

/// `POST /token`: a form is an OAuth token request (the OpenID Provider's); JSON asks for a demo
/// token directly.
async fn token_create(State(idp): State<Arc<Idp>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        return match serde_urlencoded::from_bytes(&body) {
            Ok(form) => super::oidc::token(&idp, &headers, form).await,
            Err(e) => super::error(StatusCode::BAD_REQUEST, format!("invalid token form: {e}")),
        };
    }
    let keys = idp.keys();
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return super::error(StatusCode::BAD_REQUEST, format!("invalid token request: {e}"));
        }
    };
    if request.sub.is_empty() {
        return super::error(StatusCode::BAD_REQUEST, "`sub` must not be empty");
    }
    let alg = match request.alg.as_deref().unwrap_or("RS256") {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return super::error(StatusCode::BAD_REQUEST, format!("unsupported alg `{other}`; use RS256 or ES256"));
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let claims = Claims {
        iss: ISSUER,
        aud: request.aud.as_deref().unwrap_or(AUDIENCE),
        sub: &request.sub,
        scope: &request.scope,
        iat: now,
        exp: now.saturating_add(request.ttl_s),
    };
    match keys.sign(alg, &claims) {
        Ok(token) => {
            Json(json!({ "access_token": token, "token_type": "Bearer", "expires_in": request.ttl_s })).into_response()
        }
        Err(e) => super::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn jwks_get(State(idp): State<Arc<Idp>>) -> Json<JwkSet> {
    Json(idp.keys().jwks.clone())
}
