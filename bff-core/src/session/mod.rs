//! Browser sessions: the BFF is the OpenID Connect client (code flow with PKCE, a client
//! secret), keeps the tokens on the server, and gives the browser only an `HttpOnly` cookie
//! naming its session ("OAuth 2.0 for Browser-Based Applications", the BFF pattern).
//!
//! ```text
//! browser                         BFF                                  identity provider
//!  GET /bff/login?returnUrl=/ ──▶ state, nonce, PKCE verifier kept;
//!                                 __Host-bff-login cookie set
//!  ◀── 302 ─────────────────────  /authorize?…&code_challenge=S256(v) ──▶ sign in
//!  GET /bff/callback?code&state ◀──────────────────────────────────────── 302
//!                             ──▶ state checked, code + verifier ──────▶ /token
//!                                 ID token checked (signature, iss,  ◀── tokens
//!                                 aud, exp, nonce); new session id
//!  ◀── 302 returnUrl, __Host-bff-session cookie
//!  GET /web/home, X-CSRF: 1   ──▶ cookie → session → Identity (refreshed before expiry)
//!  POST /bff/logout           ──▶ refresh token revoked, session deleted ─▶ /end_session
//! ```
//!
//! A protected route takes a bearer token as before, or the cookie; with the cookie it also
//! needs `X-CSRF: 1` (a header no cross-site form can send), and an `Origin`, when the browser
//! sends one, of this BFF or an allowed page. The session's user becomes the request's
//! [`Identity`], so scopes, limits and identity headers work unchanged.

mod cookie;
mod endpoints;
pub(crate) mod layer;
mod provider;
mod secret;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, HeaderValue, Uri};
use metrics::Counter;

use crate::config::{Config, SessionConfig, SessionStoreKind};
use crate::observe::metrics::Metrics;
use crate::policy::auth::{AuthError, Identity};
use provider::{Provider, ProviderError};
use store::{Session, SessionRecord, Store, now_s};

pub(crate) use cookie::{is_ours as is_session_cookie, pairs as cookie_pairs, remove_ours_set as remove_set_cookies};
pub(crate) use endpoints::routes;

/// The header a cookie-authenticated call must carry, with the value `1`.
pub(crate) const CSRF_HEADER: &str = "x-csrf";

/// The access token's lifetime when the provider does not say (`expires_in`).
const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(300);

/// The configured sessions: the provider, the store and the rules. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Sessions(Arc<Inner>);

struct Inner {
    provider: Provider,
    store: Store,
    config: SessionConfig,
    /// Pages besides this BFF's own that may make cookie-authenticated calls.
    origins: Vec<HeaderValue>,
    /// The scheme of this BFF's own URLs (`https` with TLS).
    scheme: &'static str,
    /// One refresh at a time per session, by store key.
    refreshing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: Events,
}

struct Events {
    login: Counter,
    logout: Counter,
    refreshed: Counter,
    refresh_refused: Counter,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("store", &self.0.store).finish_non_exhaustive()
    }
}

impl Sessions {
    /// The sessions of `config`, if it has `[session]`; connects to Redis for the `redis` store.
    pub(crate) async fn from_config(config: &Config, metrics: &Metrics) -> Result<Option<Self>, (String, String)> {
        let (Some(session), Some(oidc)) = (&config.session, &config.oidc) else { return Ok(None) };
        let provider = Provider::new(oidc, metrics).map_err(|e| ("oidc".to_owned(), e))?;
        if oidc.redirect_uri.is_none() && config.server.allowed_hosts.is_empty() {
            tracing::warn!(
                "`oidc.redirect_uri` is not set, so a login's redirect URI is built from the request's \
                 host, and `server.allowed_hosts` is empty, so any host is answered: set one of them"
            );
        }
        let store = match session.store {
            SessionStoreKind::Memory => {
                Store::Memory(store::Memory::new(session.memory_bytes, session.idle_timeout, session.login_timeout))
            }
            SessionStoreKind::Redis => {
                let Some(redis) = &config.redis else {
                    return Err(("session.store".into(), "`redis` needs `redis.url`".into()));
                };
                let connection = crate::redis_connection::connect(redis).await.map_err(|e| ("redis.url".into(), e))?;
                let prefix = format!("{}:bff-session", redis.prefix);
                let timeout = redis.timeout.max(Duration::from_millis(250));
                Store::Redis(store::Redis::new(
                    connection,
                    &prefix,
                    timeout,
                    session.idle_timeout,
                    session.login_timeout,
                ))
            }
        };
        let mut origins: Vec<HeaderValue> = session.allowed_origins.iter().map(|o| o.header_value().clone()).collect();
        if let Some(cors) = &config.cors {
            origins.extend(cors.allow_origins.iter().map(|o| o.header_value().clone()));
        }
        let event = |name: &str| metrics.counter("bff_session_events_total", &[("event", name.to_owned())]);
        Ok(Some(Self(Arc::new(Inner {
            provider,
            store,
            config: session.clone(),
            origins,
            scheme: if config.tls.is_some() { "https" } else { "http" },
            refreshing: std::sync::Mutex::default(),
            events: Events {
                login: event("login"),
                logout: event("logout"),
                refreshed: event("refreshed"),
                refresh_refused: event("refresh_refused"),
            },
        }))))
    }

    /// The identity of a cookie-authenticated request, after its CSRF checks (a `websocket`
    /// opening's by its `Origin`); its access token refreshed first when it expires within
    /// `session.refresh_before`.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        websocket: bool,
    ) -> Result<(Identity, SessionToken), AuthError> {
        let (_, session) = self.session(headers, uri, websocket).await?;
        Ok((session.identity.clone(), SessionToken(session)))
    }

    /// The request's session (its store key and record), after the CSRF checks: `X-CSRF` and
    /// the `Origin` when there is one, or for a `websocket` opening, its `Origin`.
    async fn session(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        websocket: bool,
    ) -> Result<(String, Arc<Session>), AuthError> {
        let id = cookie::read(headers, cookie::SESSION).ok_or(AuthError::SignInRequired)?;
        if websocket {
            self.check_websocket_origin(headers, uri)?;
        } else {
            self.check_csrf(headers, uri)?;
        }
        self.fresh(id).await
    }

    /// The session of cookie `id` (its store key and record), refreshed when it is due.
    async fn fresh(&self, id: &str) -> Result<(String, Arc<Session>), AuthError> {
        let key = secret::store_key(id);
        let record = self.load(&key).await?;
        if !self.needs_refresh(&record) {
            return Ok((key, record));
        }
        let record = self.refresh(&key).await?;
        Ok((key, record))
    }

    async fn load(&self, key: &str) -> Result<Arc<Session>, AuthError> {
        match self.0.store.session(key).await {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(AuthError::SessionEnded),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session");
                Err(AuthError::SessionsUnavailable)
            }
        }
    }

    fn needs_refresh(&self, record: &SessionRecord) -> bool {
        record.refresh_token.is_some()
            && record.access_expires_at <= now_s().saturating_add(self.0.config.refresh_before.as_secs())
    }

    /// Refreshes the session's tokens, once however many of its requests ask at the same time;
    /// a refresh the provider refuses ends the session. While the provider cannot be reached
    /// the session goes on with the tokens it has, and the next request tries again.
    ///
    /// The refresh runs to its end even when the request that asked goes away: the provider may
    /// have rotated the refresh token already, and were the new one dropped, the next refresh
    /// would present the old one, a reuse, for which the provider ends the session.
    async fn refresh(&self, key: &str) -> Result<Arc<Session>, AuthError> {
        let (sessions, key) = (self.clone(), key.to_owned());
        crate::detached::finish(async move { sessions.refresh_once(&key).await })
            .await
            .unwrap_or(Err(AuthError::SessionsUnavailable))
    }

    async fn refresh_once(&self, key: &str) -> Result<Arc<Session>, AuthError> {
        let lock = {
            let mut refreshing = self.0.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            refreshing.entry(key.to_owned()).or_default().clone()
        };
        let result = {
            let _turn = lock.lock().await;
            self.refresh_now(key).await
        };
        let mut refreshing = self.0.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one: nobody else waits for this session.
        if Arc::strong_count(&lock) == 2 {
            refreshing.remove(key);
        }
        result
    }

    async fn refresh_now(&self, key: &str) -> Result<Arc<Session>, AuthError> {
        // Another request may have refreshed while this one waited.
        let record = self.load(key).await?;
        if !self.needs_refresh(&record) {
            return Ok(record);
        }
        // Another replica's refresh, when there is one, is waited for: its tokens are the ones.
        let claim = self.0.provider.config().timeout + Duration::from_secs(1);
        match self.0.store.claim_refresh(key, claim).await {
            Ok(true) => {}
            Ok(false) => return self.refreshed_elsewhere(key, record).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a session's refresh");
                return Err(AuthError::SessionsUnavailable);
            }
        }
        let result = self.refresh_claimed(key).await;
        if let Err(e) = self.0.store.release_refresh(key).await {
            tracing::warn!(error = %e, "a refresh claim is left to expire");
        }
        result
    }

    /// Refreshes the session, its refresh claimed: with the refresh token it has now (another
    /// replica may have rotated it since this request read it).
    async fn refresh_claimed(&self, key: &str) -> Result<Arc<Session>, AuthError> {
        let session = self.load(key).await?;
        let Some(refresh_token) = session.refresh_token.clone().filter(|_| self.needs_refresh(&session)) else {
            return Ok(session);
        };
        let mut record = session.record.clone();
        let provider = &self.0.provider;
        let tokens = match provider.discovered().await {
            Ok(discovered) => provider.refresh(&discovered, &refresh_token).await,
            Err(e) => Err(e),
        };
        match tokens {
            Ok(tokens) => {
                self.0.events.refreshed.increment(1);
                let ttl = tokens.expires_in.map_or(DEFAULT_ACCESS_TTL, Duration::from_secs);
                record.access_token = tokens.access_token;
                record.access_expires_at = now_s().saturating_add(ttl.as_secs());
                if let Some(rotated) = tokens.refresh_token {
                    record.refresh_token = Some(rotated);
                }
                if let Some(scope) = tokens.scope {
                    record.scopes = scope.split_whitespace().map(str::to_owned).collect();
                }
                self.0.store.put_session(key, record).await.map_err(|e| {
                    tracing::warn!(error = %e, "cannot keep a session's refreshed tokens");
                    AuthError::SessionsUnavailable
                })
            }
            Err(ProviderError::Refused(why)) => {
                self.0.events.refresh_refused.increment(1);
                tracing::info!(subject = %record.subject, reason = %why, "the provider refused a refresh: session ended");
                if let Err(e) = self.0.store.remove_session(key).await {
                    tracing::warn!(error = %e, "cannot delete an ended session");
                }
                Err(AuthError::SessionEnded)
            }
            Err(ProviderError::Unavailable(why)) => {
                tracing::warn!(reason = %why, "cannot refresh a session's tokens; keeping them until the next request");
                Ok(session)
            }
        }
    }

    /// The session once another replica has refreshed it (its tokens changed), or as it is after
    /// the wait: the tokens it has are still the session's.
    async fn refreshed_elsewhere(&self, key: &str, before: Arc<Session>) -> Result<Arc<Session>, AuthError> {
        const EVERY: Duration = Duration::from_millis(25);
        let give_up = tokio::time::Instant::now() + self.0.provider.config().timeout;
        while tokio::time::Instant::now() < give_up {
            tokio::time::sleep(EVERY).await;
            let now = self.load(key).await?;
            // Rotated, or refreshed (two refreshes within a second may give the same token).
            let changed = now.refresh_token != before.refresh_token
                || now.access_token != before.access_token
                || now.access_expires_at != before.access_expires_at;
            if changed || !self.needs_refresh(&now) {
                return Ok(now);
            }
        }
        Ok(before)
    }

    /// A cookie-authenticated call must carry `X-CSRF: 1`, and come from an allowed page when
    /// the browser names one (`Origin`).
    fn check_csrf(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), AuthError> {
        if headers.get(CSRF_HEADER).is_none_or(|v| v != "1") {
            return Err(AuthError::CsrfRequired("a call with the session cookie must carry `X-CSRF: 1`".to_owned()));
        }
        self.check_origin(headers, uri)
    }

    /// A WebSocket opened with the session cookie: a browser cannot add `X-CSRF` to it, but
    /// always sends the page's `Origin` (and a page cannot change it), and a WebSocket is not
    /// held to the same-origin policy: any site's page could open one and read it. So the
    /// `Origin` must be there, and be this BFF's own or an allowed page's.
    fn check_websocket_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), AuthError> {
        if !headers.contains_key(ORIGIN) {
            let why = "a WebSocket opened with the session cookie must carry its page's `Origin`";
            return Err(AuthError::CsrfRequired(why.to_owned()));
        }
        self.check_origin(headers, uri)
    }

    /// The `Origin`, when there is one, is this BFF's own or an allowed page's.
    fn check_origin(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), AuthError> {
        let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
        if self.0.origins.contains(origin) || self.is_own_origin(origin, headers, uri) {
            return Ok(());
        }
        let shown = crate::problem::bounded(origin.to_str().unwrap_or("(not text)"), 128);
        Err(AuthError::CsrfRequired(format!("a page of `{shown}` may not call this BFF with its cookie")))
    }

    /// Whether `origin` is the one this request was sent to (`scheme://Host`).
    fn is_own_origin(&self, origin: &HeaderValue, headers: &HeaderMap, uri: &Uri) -> bool {
        let Some(authority) = authority(headers, uri) else { return false };
        let origin = origin.as_bytes();
        ["https://", "http://"].iter().any(|scheme| {
            origin.strip_prefix(scheme.as_bytes()).is_some_and(|rest| rest.eq_ignore_ascii_case(authority.as_bytes()))
        })
    }

    /// This BFF's URL for `path`, as the browser reached it: the request's `Host` (or HTTP/2
    /// authority) under this BFF's scheme.
    fn own_url(&self, headers: &HeaderMap, uri: &Uri, path: &str) -> Option<String> {
        let authority = authority(headers, uri)?;
        Some(format!("{}://{authority}{path}", self.0.scheme))
    }
}

/// The session of a request authenticated by its cookie, for the passthrough routes that call
/// their upstream with its access token (`forward_token`). Never sent anywhere else.
#[derive(Clone)]
pub(crate) struct SessionToken(Arc<Session>);

impl SessionToken {
    /// `Bearer <the session's access token>`, when the token can be a header value.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        HeaderValue::try_from(format!("Bearer {}", self.0.access_token)).ok()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// The request's host ([`crate::request::host`]), only a valid authority.
fn authority<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let text = crate::request::host(headers, uri)?;
    let valid = text.parse::<axum::http::uri::Authority>().is_ok_and(|a| a.as_str() == text && !text.contains('@'));
    valid.then_some(text)
}
