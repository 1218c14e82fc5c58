//! `GET /bff/login`, `GET /bff/callback`, `GET /bff/user` and `POST /bff/logout`.

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::provider::{Provider, ProviderError};
use super::store::{LoginRecord, SessionRecord, now_s};
use super::{Sessions, cookie, layer, secret};
use crate::extract::Query;
use crate::policy::auth::AuthError;
use crate::problem::Problem;
use crate::routing::{Handlers, get, post};

/// The longest `returnUrl` and `login_hint` taken.
const MAX_RETURN_URL: usize = 2048;
const MAX_LOGIN_HINT: usize = 256;

/// The session endpoints, public routes of the BFF (each checks what it needs itself).
pub(crate) fn routes(sessions: &Sessions) -> [(&'static str, Handlers); 4] {
    let state = sessions.clone();
    [
        ("/bff/login", get(login).with_state(state.clone())),
        ("/bff/callback", get(callback).with_state(state.clone())),
        ("/bff/user", get(user).with_state(state.clone())),
        ("/bff/logout", post(logout).with_state(state)),
    ]
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    Problem::new(status, code, detail).into_response()
}

fn login_failed(detail: impl Into<String>) -> Response {
    problem(StatusCode::BAD_REQUEST, "LOGIN_FAILED", detail)
}

fn provider_unavailable(error: &ProviderError) -> Response {
    tracing::warn!(%error, "identity provider");
    problem(StatusCode::BAD_GATEWAY, "IDP_UNAVAILABLE", "the identity provider cannot be reached; try again")
}

fn store_unavailable(error: &impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "session store");
    AuthError::SessionsUnavailable.into_response()
}

/// A redirect that no cache keeps, setting `cookies`.
fn redirect(status: StatusCode, location: &str, cookies: &[HeaderValue]) -> Response {
    let Ok(location) = HeaderValue::try_from(location) else {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "cannot redirect to this location");
    };
    let mut response = (status, [(LOCATION, location)]).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie.clone());
    }
    response
}

/// Whether `url` is a path of this site: `/…`, not `//host` or `/\host` (which browsers read
/// as another host), no control characters, not too long.
fn is_local_path(url: &str) -> bool {
    url.len() <= MAX_RETURN_URL
        && url.starts_with('/')
        && !url.starts_with("//")
        && !url.starts_with("/\\")
        && !url.chars().any(|c| c.is_control() || c == '\\')
}

#[derive(Debug, Deserialize)]
struct LoginParams {
    #[serde(rename = "returnUrl")]
    return_url: Option<String>,
    login_hint: Option<String>,
}

/// Starts a login: its secrets kept server-side under a new login cookie, then off to the
/// provider.
async fn login(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<LoginParams>,
) -> Response {
    let return_url = params.return_url.unwrap_or_else(|| "/".to_owned());
    if !is_local_path(&return_url) {
        return problem(StatusCode::BAD_REQUEST, "INVALID_RETURN_URL", "`returnUrl` must be a path of this site");
    }
    let hint = params.login_hint.filter(|h| !h.is_empty());
    if hint.as_ref().is_some_and(|h| h.len() > MAX_LOGIN_HINT || h.chars().any(char::is_control)) {
        return problem(StatusCode::BAD_REQUEST, "INVALID_LOGIN_HINT", "`login_hint` is too long or not text");
    }
    let Some(redirect_uri) = sessions.redirect_uri(&headers, &uri) else {
        return problem(StatusCode::BAD_REQUEST, "INVALID_HOST", "the request's Host cannot name this BFF");
    };
    let provider = &sessions.0.provider;
    let discovered = match provider.discovered().await {
        Ok(discovered) => discovered,
        Err(e) => return provider_unavailable(&e),
    };
    let login = LoginRecord {
        state: secret::random_id(),
        nonce: secret::random_id(),
        verifier: secret::random_id(),
        return_url,
        redirect_uri,
    };
    let id = secret::random_id();
    if let Err(e) = sessions.0.store.put_login(&secret::store_key(&id), &login).await {
        return store_unavailable(&e);
    }
    let challenge = secret::challenge(&login.verifier);
    let to = provider.authorize_url(
        &discovered,
        &login.redirect_uri,
        &login.state,
        &login.nonce,
        &challenge,
        hint.as_deref(),
    );
    let cookie = cookie::set(cookie::LOGIN, &id, sessions.0.config.login_timeout);
    redirect(StatusCode::FOUND, to.as_str(), &[cookie])
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Finishes a login: the provider's answer must match this browser's login; the code is
/// exchanged, the ID token checked, and a new session begins under a new id.
async fn callback(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Some(login_id) = cookie::read(&headers, cookie::LOGIN) else {
        return login_failed("no login in progress in this browser: start again at /bff/login");
    };
    // Taken, so an answer is accepted once.
    let login = match sessions.0.store.take_login(&secret::store_key(login_id)).await {
        Ok(Some(login)) => login,
        Ok(None) => return login_failed("this login has expired or was finished already: start again at /bff/login"),
        Err(e) => return store_unavailable(&e),
    };
    if let Some(error) = params.error {
        let description = params.error_description.map(|d| format!(": {d}")).unwrap_or_default();
        return login_failed(crate::problem::bounded(
            &format!("the identity provider answered `{error}`{description}"),
            256,
        ));
    }
    let state = params.state.unwrap_or_default();
    if !super::provider::constant_time_eq(&state, &login.state) {
        return login_failed("the answer's `state` is not this browser's login");
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        return login_failed("the answer has no `code`");
    };
    let provider = &sessions.0.provider;
    let discovered = match provider.discovered().await {
        Ok(discovered) => discovered,
        Err(e) => return provider_unavailable(&e),
    };
    if params.iss.as_deref().is_some_and(|iss| !Provider::is_issuer(&discovered, iss)) {
        return login_failed("the answer comes from another issuer (`iss`)");
    }
    let tokens = match provider.exchange(&discovered, &code, &login.verifier, &login.redirect_uri).await {
        Ok(tokens) => tokens,
        Err(ProviderError::Refused(why)) => return login_failed(format!("the provider refused the code: {why}")),
        Err(e) => return provider_unavailable(&e),
    };
    let Some(id_token) = tokens.id_token else {
        return problem(StatusCode::BAD_GATEWAY, "ID_TOKEN_INVALID", "the provider sent no ID token");
    };
    let claims = match provider.verify_id_token(&discovered, &id_token, &login.nonce).await {
        Ok(claims) => claims,
        Err(why) => {
            tracing::warn!(reason = %why, "an ID token was refused");
            return problem(StatusCode::BAD_GATEWAY, "ID_TOKEN_INVALID", format!("the ID token is not valid: {why}"));
        }
    };
    let now = now_s();
    let config = &sessions.0.config;
    let scopes = match &tokens.scope {
        Some(granted) => granted.split_whitespace().map(str::to_owned).collect(),
        None => provider.config().scopes.clone(),
    };
    let record = SessionRecord {
        subject: claims.subject,
        scopes,
        name: claims.name,
        email: claims.email,
        access_token: tokens.access_token,
        access_expires_at: now.saturating_add(tokens.expires_in.unwrap_or(super::DEFAULT_ACCESS_TTL.as_secs())),
        refresh_token: tokens.refresh_token,
        id_token,
        created_at: now,
        expires_at: now.saturating_add(config.max_lifetime.as_secs()),
    };
    // A new id at every login: an id an attacker planted before it (fixation) names nothing.
    if let Some(previous) = cookie::read(&headers, cookie::SESSION)
        && let Err(e) = sessions.0.store.remove_session(&secret::store_key(previous)).await
    {
        return store_unavailable(&e);
    }
    let id = secret::random_id();
    if let Err(e) = sessions.0.store.put_session(&secret::store_key(&id), record).await {
        return store_unavailable(&e);
    }
    sessions.0.events.login.increment(1);
    let cookies = [cookie::set(cookie::SESSION, &id, config.max_lifetime), cookie::clear(cookie::LOGIN)];
    redirect(StatusCode::FOUND, &login.return_url, &cookies)
}

/// The session's user and its expiry, for the page to show.
async fn user(State(sessions): State<Sessions>, headers: HeaderMap, uri: Uri) -> Response {
    let (_, record) = match sessions.session(&headers, &uri, false).await {
        Ok(found) => found,
        Err(e) => return layer::refusal(e),
    };
    let expires_at = record.expires_at.min(now_s().saturating_add(sessions.0.config.idle_timeout.as_secs()));
    let body = json!({
        "sub": record.subject,
        "name": record.name,
        "email": record.email,
        "scopes": record.scopes,
        "expires_at": expires_at,
        "logout_url": "/bff/logout",
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Ends the session: its refresh token revoked at the provider, its record deleted, its cookie
/// cleared, then the browser sent to the provider's end-session endpoint. A form post from the
/// page is enough (browsers send `Origin` with it); any other caller sends `X-CSRF: 1`.
async fn logout(State(sessions): State<Sessions>, headers: HeaderMap, uri: Uri) -> Response {
    let csrf = headers.get(super::CSRF_HEADER).is_some_and(|v| v == "1");
    let allowed = if csrf || headers.contains_key(axum::http::header::ORIGIN) {
        sessions.check_origin(&headers, &uri)
    } else {
        Err(AuthError::CsrfRequired("a logout must come from this site's page, or carry `X-CSRF: 1`".to_owned()))
    };
    if let Err(e) = allowed {
        return e.into_response();
    }
    let provider = &sessions.0.provider;
    let mut id_token = None;
    if let Some(id) = cookie::read(&headers, cookie::SESSION) {
        let key = secret::store_key(id);
        match sessions.0.store.session(&key).await {
            Ok(Some(record)) => {
                if let Some(refresh_token) = &record.refresh_token {
                    let revoked = match provider.discovered().await {
                        Ok(discovered) => provider.revoke(&discovered, refresh_token).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = revoked {
                        tracing::warn!(error = %e, "cannot revoke a refresh token at logout");
                    }
                }
                id_token = Some(record.id_token.clone());
            }
            Ok(None) => {}
            Err(e) => return store_unavailable(&e),
        }
        if let Err(e) = sessions.0.store.remove_session(&key).await {
            return store_unavailable(&e);
        }
        sessions.0.events.logout.increment(1);
    }
    let Some(post_logout) = sessions.post_logout_uri(&headers, &uri) else {
        return problem(StatusCode::BAD_REQUEST, "INVALID_HOST", "the request's Host cannot name this BFF");
    };
    let to = match provider.discovered().await {
        Ok(discovered) => provider.end_session_url(&discovered, id_token.as_deref(), &post_logout).map(String::from),
        Err(_) => None,
    };
    // Without an end-session endpoint (or the provider out of reach), straight back to the page.
    redirect(StatusCode::SEE_OTHER, to.as_deref().unwrap_or(&post_logout), &[cookie::clear(cookie::SESSION)])
}

impl Sessions {
    /// `oidc.redirect_uri`, else `<this BFF>/bff/callback`.
    fn redirect_uri(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        let configured = self.0.provider.config().redirect_uri.as_ref();
        configured.map(ToString::to_string).or_else(|| self.own_url(headers, uri, "/bff/callback"))
    }

    /// `oidc.post_logout_redirect_uri`, else `<this BFF>/`.
    fn post_logout_uri(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        let configured = self.0.provider.config().post_logout_redirect_uri.as_ref();
        configured.map(ToString::to_string).or_else(|| self.own_url(headers, uri, "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_path_of_this_site_is_a_return_url() {
        for local in ["/", "/web/home?tab=orders", "/a/b#c"] {
            assert!(is_local_path(local), "{local}");
        }
        for foreign in ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "", "/a\\b", "/\r\nx"] {
            assert!(!is_local_path(foreign), "{foreign}");
        }
        assert!(!is_local_path(&format!("/{}", "a".repeat(MAX_RETURN_URL))));
    }
}
