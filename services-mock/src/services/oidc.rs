//! auth as a small OpenID Provider, for the web BFF's browser sessions: discovery, `/authorize`
//! (code flow, PKCE S256 required, a login page where a demo user is chosen, or `login_hint` to
//! skip it), `/token` (an authorization code with its verifier; a refresh token, rotated, a
//! reused one revoking its whole family), `/revoke` and `/end_session`. Clients authenticate by
//! secret (HTTP Basic or in the form). Demo use only: its clients, users and keys are the mock's.
//!
//! The issuer is the URL the provider is reached at (`http://<Host>`), as discovery says it; the
//! access tokens it issues are the mock's usual ones (`iss` [`ISSUER`], `aud` [`AUDIENCE`]), so a
//! BFF's `[auth]` accepts them as bearer tokens too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, HOST, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth::{AUDIENCE, ISSUER, Keys};
use crate::data;

/// The client id of the web BFF, registered at start.
pub const DEMO_CLIENT_ID: &str = "bff-web";
/// Its secret: the mock's, for the demo only.
pub const DEMO_CLIENT_SECRET: &str = "demo-web-secret";
/// How long an access token lives unless a test shortens it ([`Idp::set_access_ttl`]).
pub const DEFAULT_ACCESS_TTL_S: i64 = 300;
/// How long an authorization code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(60);
/// The web BFF's local-development origins, registered for the demo client.
const DEMO_ORIGINS: [&str; 2] = ["http://127.0.0.1:8080", "http://localhost:8080"];
/// The users the login page offers.
const LOGIN_PAGE_USERS: [u64; 4] = [42, 7, 99, 1234];

/// The provider's registered clients, its pending codes and its refresh tokens.
#[derive(Debug)]
pub struct Idp {
    keys: Arc<Keys>,
    state: Mutex<IdpState>,
    /// How long `/token` waits, its work done, before it answers.
    token_answer_delay_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct IdpState {
    clients: HashMap<String, Client>,
    codes: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, RefreshToken>,
    revoked_families: HashSet<u64>,
    next_family: u64,
}

#[derive(Debug, Clone)]
struct Client {
    secret: String,
    redirect_uris: BTreeSet<String>,
    post_logout_redirect_uris: BTreeSet<String>,
    access_ttl_s: i64,
}

/// What an authorization code stands for.
#[derive(Debug)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    user: u64,
    scope: String,
    nonce: Option<String>,
    issued: Instant,
}

#[derive(Debug)]
struct RefreshToken {
    client_id: String,
    user: u64,
    scope: String,
    family: u64,
    used: bool,
}

impl Idp {
    /// A provider with the demo client registered for the web BFF's local-development origins.
    pub fn new(keys: Arc<Keys>) -> Self {
        let idp = Self { keys, state: Mutex::default(), token_answer_delay_ms: AtomicU64::new(0) };
        idp.state().clients.insert(
            DEMO_CLIENT_ID.to_owned(),
            Client {
                secret: DEMO_CLIENT_SECRET.to_owned(),
                redirect_uris: BTreeSet::new(),
                post_logout_redirect_uris: BTreeSet::new(),
                access_ttl_s: DEFAULT_ACCESS_TTL_S,
            },
        );
        for origin in DEMO_ORIGINS {
            idp.register_origin(DEMO_CLIENT_ID, origin);
        }
        idp
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn state(&self) -> MutexGuard<'_, IdpState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `{origin}/bff/callback` as a redirect URI of `client_id`, and `{origin}/` as a
    /// page to return to after logout: what a BFF listening at `origin` sends.
    pub fn register_origin(&self, client_id: &str, origin: &str) {
        let origin = origin.trim_end_matches('/');
        if let Some(client) = self.state().clients.get_mut(client_id) {
            client.redirect_uris.insert(format!("{origin}/bff/callback"));
            client.post_logout_redirect_uris.insert(format!("{origin}/"));
        }
    }

    /// Makes `client_id`'s access tokens live `ttl_s` seconds (a test of refreshing).
    pub fn set_access_ttl(&self, client_id: &str, ttl_s: i64) {
        if let Some(client) = self.state().clients.get_mut(client_id) {
            client.access_ttl_s = ttl_s;
        }
    }

    /// Makes `/token` answer `delay` after it has done its work (codes taken, refresh tokens
    /// rotated): a slow way back to the client, or a test of a client that goes away meanwhile.
    pub fn delay_token_answers(&self, delay: Duration) {
        self.token_answer_delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Revokes every refresh token issued to `user` (the user signed out elsewhere, or an
    /// administrator ended their sessions).
    pub fn revoke_user(&self, user: u64) {
        let mut state = self.state();
        let families: Vec<u64> = state.refresh_tokens.values().filter(|t| t.user == user).map(|t| t.family).collect();
        state.revoked_families.extend(families);
    }

    /// How many refresh tokens are live (issued, not used, not revoked).
    pub fn live_refresh_tokens(&self) -> usize {
        let state = self.state();
        state.refresh_tokens.values().filter(|t| !t.used && !state.revoked_families.contains(&t.family)).count()
    }
}

pub(crate) fn router(idp: Arc<Idp>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/authorize", get(authorize))
        .route("/revoke", axum::routing::post(revoke))
        .route("/end_session", get(end_session))
        .with_state(idp)
}

/// `http://<Host>`: the issuer as this request reaches it.
fn issuer(headers: &HeaderMap) -> String {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// 32 random bytes, base64url: codes and refresh tokens. The mock's randomness is not a CSPRNG;
/// nothing real is protected by it.
fn random_token() -> String {
    let bytes: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An OAuth error answer (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let body = json!({ "error": error, "error_description": description.into() });
    (status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn discovery(headers: HeaderMap) -> Json<serde_json::Value> {
    let issuer = issuer(&headers);
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "end_session_endpoint": format!("{issuer}/end_session"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "profile", "email", "orders", "offline_access"],
        "claims_supported": ["sub", "name", "email", "nonce", "auth_time"],
    }))
}

#[derive(Debug, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
}

/// `GET /authorize`: a client or redirect URI it does not know is a 400 here (never a redirect:
/// that is how open redirectors are made); any other error goes back to the client with its
/// `state`. Without `login_hint` the login page lists demo users to choose from.
async fn authorize(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Query(params): Query<AuthorizeParams>,
    uri: axum::http::Uri,
) -> Response {
    let client_id = params.client_id.as_deref().unwrap_or_default();
    let redirect_uri = params.redirect_uri.as_deref().unwrap_or_default();
    let registered = idp.state().clients.get(client_id).is_some_and(|c| c.redirect_uris.contains(redirect_uri));
    // A registered URI that is not a URL (a test registered a bad origin) is refused the same way.
    let target = url::Url::parse(redirect_uri).ok().filter(|_| registered);
    let Some(target) = target else {
        let message = format!("unknown client `{client_id}` or redirect_uri `{redirect_uri}` not registered for it");
        return (StatusCode::BAD_REQUEST, Html(page("Sign-in error", &escape(&message)))).into_response();
    };
    let back = |pairs: &[(&str, &str)]| {
        let mut location = target.clone();
        location.query_pairs_mut().extend_pairs(pairs).append_pair("iss", &issuer(&headers));
        if let Some(state) = &params.state {
            location.query_pairs_mut().append_pair("state", state);
        }
        redirect(location.as_str())
    };
    let refuse = |error: &str, description: &str| back(&[("error", error), ("error_description", description)]);
    if params.response_type.as_deref() != Some("code") {
        return refuse("unsupported_response_type", "only the code flow (`response_type=code`) is supported");
    }
    let scope = params.scope.as_deref().unwrap_or_default();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return refuse("invalid_scope", "`scope` must include `openid`");
    }
    let challenge = match (params.code_challenge.as_deref(), params.code_challenge_method.as_deref()) {
        (Some(challenge), Some("S256")) if challenge.len() == 43 => challenge.to_owned(),
        _ => return refuse("invalid_request", "PKCE is required: `code_challenge` with `code_challenge_method=S256`"),
    };
    let Some(hint) = params.login_hint.as_deref() else {
        return login_page(&uri);
    };
    let Some(user) = data::user_id(hint) else {
        return refuse("login_required", "no such user");
    };
    let code = random_token();
    let grant = Grant {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        challenge,
        user,
        scope: scope.to_owned(),
        nonce: params.nonce.clone(),
        issued: Instant::now(),
    };
    {
        let mut state = idp.state();
        state.codes.retain(|_, g| g.issued.elapsed() < CODE_TTL);
        state.codes.insert(code.clone(), grant);
    }
    back(&[("code", &code)])
}

/// The login page: each demo user is a link to this same request with its `login_hint`.
fn login_page(uri: &axum::http::Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    let mut list = String::new();
    for user in LOGIN_PAGE_USERS {
        let profile = data::user(user);
        let name = profile["displayName"].as_str().unwrap_or_default();
        let href = format!("/authorize?{query}&login_hint={user}");
        let _ = write!(
            list,
            r#"<li><a class="user" id="user-{user}" href="{}">{} <small>user {user}</small></a></li>"#,
            escape(&href),
            escape(name)
        );
    }
    let body = format!("<p>Choose a demo user to sign in as.</p><ul>{list}</ul>");
    let mut response = Html(page("Sign in to the demo", &body)).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;color:#1f2937}}\
         ul{{list-style:none;padding:0}}li{{margin:.5rem 0}}a.user{{display:block;padding:.75rem 1rem;\
         border:1px solid #d1d5db;border-radius:.5rem;text-decoration:none;color:inherit}}\
         a.user:hover{{background:#f3f4f6}}small{{color:#6b7280;margin-left:.5rem}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        Err(_) => super::error(StatusCode::BAD_REQUEST, "cannot redirect there"),
    }
}

/// The form of `POST /token`, `POST /revoke`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl Idp {
    /// The client the request authenticates as (HTTP Basic, else the form's `client_id` and
    /// `client_secret`), if its secret is right.
    fn authenticate(&self, headers: &HeaderMap, form: &TokenForm) -> Option<(String, Client)> {
        let basic = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok());
        let (id, secret) = match &basic {
            Some(pair) => {
                let (id, secret) = pair.split_once(':')?;
                (form_decode(id), form_decode(secret))
            }
            None => (form.client_id.clone()?, form.client_secret.clone()?),
        };
        let client = self.state().clients.get(&id).cloned()?;
        (client.secret == secret).then_some((id, client))
    }

    fn id_token(&self, issuer: &str, client_id: &str, user: u64, nonce: Option<&str>, now: i64) -> Option<String> {
        let profile = data::user(user);
        let mut claims = json!({
            "iss": issuer, "aud": client_id, "sub": user.to_string(),
            "iat": now, "exp": now + 600, "auth_time": now,
            "name": profile["displayName"], "email": profile["email"],
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        self.keys.sign(Algorithm::RS256, &claims).ok()
    }

    fn access_token(&self, user: u64, scope: &str, ttl_s: i64, now: i64) -> Option<String> {
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": user.to_string(), "scope": api_scopes(scope),
            "iat": now, "exp": now + ttl_s,
        });
        self.keys.sign(Algorithm::RS256, &claims).ok()
    }

    fn new_refresh_token(&self, client_id: &str, user: u64, scope: &str, family: Option<u64>) -> String {
        let token = random_token();
        let mut state = self.state();
        let family = family.unwrap_or_else(|| {
            state.next_family += 1;
            state.next_family
        });
        let record =
            RefreshToken { client_id: client_id.to_owned(), user, scope: scope.to_owned(), family, used: false };
        state.refresh_tokens.insert(token.clone(), record);
        token
    }
}

/// The scopes an access token carries: the requested ones, less OpenID's own.
fn api_scopes(scope: &str) -> String {
    let api = scope.split_whitespace().filter(|s| !matches!(*s, "openid" | "offline_access" | "email"));
    api.collect::<Vec<_>>().join(" ")
}

/// `application/x-www-form-urlencoded` decoding of one Basic credential part (RFC 6749 §2.3.1).
fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// `POST /token` with a form: the authorization code and refresh token grants, answered after
/// [`Idp::delay_token_answers`].
pub(crate) async fn token(idp: &Idp, headers: &HeaderMap, form: TokenForm) -> Response {
    let answer = grant(idp, headers, form);
    let delay = idp.token_answer_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    answer
}

fn grant(idp: &Idp, headers: &HeaderMap, form: TokenForm) -> Response {
    let Some((client_id, client)) = idp.authenticate(headers, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    };
    let now = now_s();
    let issuer = issuer(headers);
    match form.grant_type.as_deref() {
        Some("authorization_code") => {
            let grant = idp.state().codes.remove(form.code.as_deref().unwrap_or_default());
            let Some(grant) = grant.filter(|g| g.issued.elapsed() < CODE_TTL) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown, used or expired code");
            };
            if grant.client_id != client_id || form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code was issued to another client");
            }
            let verifier = form.code_verifier.as_deref().unwrap_or_default();
            if !(43..=128).contains(&verifier.len())
                || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier)) != grant.challenge
            {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the PKCE verifier does not match");
            }
            let id_token = idp.id_token(&issuer, &client_id, grant.user, grant.nonce.as_deref(), now);
            let access = idp.access_token(grant.user, &grant.scope, client.access_ttl_s, now);
            let refresh = idp.new_refresh_token(&client_id, grant.user, &grant.scope, None);
            let (Some(id_token), Some(access)) = (id_token, access) else {
                return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "cannot sign");
            };
            tokens(json!({
                "access_token": access, "token_type": "Bearer", "expires_in": client.access_ttl_s,
                "refresh_token": refresh, "id_token": id_token, "scope": grant.scope,
            }))
        }
        Some("refresh_token") => {
            let presented = form.refresh_token.as_deref().unwrap_or_default();
            let (user, scope, family) = {
                let mut state = idp.state();
                let Some(record) = state.refresh_tokens.get_mut(presented) else {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
                };
                if record.client_id != client_id {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "issued to another client");
                }
                let reused = std::mem::replace(&mut record.used, true);
                let (user, scope, family) = (record.user, record.scope.clone(), record.family);
                if reused {
                    // A used token presented again: it was stolen, or its rotation was lost. Either
                    // way no token of its family may be trusted any more.
                    state.revoked_families.insert(family);
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token reused: revoked");
                }
                if state.revoked_families.contains(&family) {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token revoked");
                }
                (user, scope, family)
            };
            let Some(access) = idp.access_token(user, &scope, client.access_ttl_s, now) else {
                return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "cannot sign");
            };
            let refresh = idp.new_refresh_token(&client_id, user, &scope, Some(family));
            tokens(json!({
                "access_token": access, "token_type": "Bearer", "expires_in": client.access_ttl_s,
                "refresh_token": refresh, "scope": scope,
            }))
        }
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("`{}`: use authorization_code or refresh_token", other.unwrap_or_default()),
        ),
    }
}

fn tokens(body: serde_json::Value) -> Response {
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `POST /revoke` (RFC 7009): revokes a refresh token's whole family; an unknown token is not an
/// error.
async fn revoke(State(idp): State<Arc<Idp>>, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    let Some((client_id, _)) = idp.authenticate(&headers, &form) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    };
    let mut state = idp.state();
    let family = state
        .refresh_tokens
        .get(form.token.as_deref().unwrap_or_default())
        .filter(|t| t.client_id == client_id)
        .map(|t| t.family);
    if let Some(family) = family {
        state.revoked_families.insert(family);
    }
    StatusCode::OK.into_response()
}

#[derive(Debug, Deserialize)]
struct EndSessionParams {
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// `GET /end_session`: back to a registered `post_logout_redirect_uri` (with `state`), else a
/// page saying the user is signed out.
async fn end_session(State(idp): State<Arc<Idp>>, Query(params): Query<EndSessionParams>) -> Response {
    let target = params.post_logout_redirect_uri.as_deref().filter(|uri| {
        let state = idp.state();
        let mut clients = state.clients.iter().filter(|(id, _)| params.client_id.as_deref().is_none_or(|c| c == *id));
        clients.any(|(_, client)| client.post_logout_redirect_uris.contains(*uri))
    });
    match target.and_then(|uri| url::Url::parse(uri).ok()) {
        Some(mut location) => {
            if let Some(state) = &params.state {
                location.query_pairs_mut().append_pair("state", state);
            }
            redirect(location.as_str())
        }
        None => Html(page("Signed out", "<p>You are signed out of the demo identity provider.</p>")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_carries_the_api_scopes_only() {
        assert_eq!(api_scopes("openid profile offline_access orders email"), "profile orders");
    }

    #[test]
    fn a_basic_credential_is_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c"), "a:b c");
    }
}
