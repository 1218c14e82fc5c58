//! Verifies JWTs with keys from a JWKS URL, fetched lazily and refreshed on an unknown `kid`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::{AuthError, Identity, parse_algorithm};
use crate::config::{AuthConfig, HttpUrl};
use crate::observe::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamSettings};

/// How long one JWKS fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Verifies bearer tokens against the keys of one issuer. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    jwks_url: HttpUrl,
    /// The issuer's host, called through the same client stack as every upstream (`auth` in the
    /// upstream metrics).
    issuer_host: Upstream,
    /// The JWKS URL's path and query.
    jwks_path: String,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// Tokens already verified, with their `exp`; keyed by the whole token, never a hash of it.
    /// Hashed with foldhash, seeded at random per process, which is many times cheaper than
    /// SipHash over a whole token: only tokens whose signature verified are ever inserted, so a
    /// client cannot fill the table with keys that collide.
    verified: Option<moka::sync::Cache<Arc<str>, (Identity, SystemTime), foldhash::fast::RandomState>>,
    /// Serialises refreshes and remembers when the last one happened; a refresh's task holds it.
    refresh: Arc<tokio::sync::Mutex<Option<Instant>>>,
    /// The `typ` header a token must have, if set (`at+jwt`, RFC 9068).
    typ: Option<String>,
    /// The longest token looked at.
    max_token_bytes: usize,
    /// The claims an [`Identity`] keeps besides `sub` and `scope` (those rate limits key by).
    keep_claims: Vec<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("jwks_url", &self.inner.jwks_url.as_str()).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: String,
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
}

impl JwtVerifier {
    /// A verifier for `config`; keys are fetched on first use, and the fetches recorded in
    /// `metrics` (as upstream `auth`).
    pub fn new(config: &AuthConfig, metrics: &Metrics) -> Self {
        let origin = config.jwks_url.origin();
        let settings = UpstreamSettings {
            timeout: JWKS_FETCH_TIMEOUT,
            connect_timeout: JWKS_FETCH_TIMEOUT,
            pool_max_idle: 1,
            ..UpstreamSettings::bare()
        };
        let issuer_host = Upstream::new("auth", &origin, settings, metrics);
        let jwks_path = config.jwks_url[url::Position::BeforePath..url::Position::AfterQuery].to_owned();
        Self {
            inner: Arc::new(Inner {
                jwks_url: config.jwks_url.clone(),
                issuer_host,
                jwks_path,
                algorithms: config.algorithms.iter().copied().map(super::algorithm).collect(),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
                min_refresh: config.jwks_min_refresh,
                keys: RwLock::new(HashMap::new()),
                verified: (config.token_cache_bytes > 0).then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(config.token_cache_bytes)
                        .weigher(|token: &Arc<str>, (identity, _): &(Identity, SystemTime)| {
                            u32::try_from(token.len() + identity.weight()).unwrap_or(u32::MAX)
                        })
                        .time_to_live(config.token_cache_ttl)
                        .build_with_hasher(foldhash::fast::RandomState::default())
                }),
                typ: config.typ.clone(),
                max_token_bytes: config.max_token_bytes,
                refresh: Arc::new(tokio::sync::Mutex::new(None)),
                keep_claims: Vec::new(),
            }),
        }
    }

    /// Keeps the claims `names` of verified tokens in their [`Identity`] ([`Identity::claim`]).
    /// Call it on a new verifier, before it is cloned.
    pub fn keep_claims(mut self, names: impl IntoIterator<Item = String>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.keep_claims = names.into_iter().collect();
        }
        self
    }

    /// A verifier that starts with `keys` already known (it still fetches on an unknown `kid`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_keys(config: &AuthConfig, keys: &JwkSet) -> Self {
        let verifier = Self::new(config, &Metrics::new());
        *verifier.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = decoding_keys(keys);
        verifier
    }

    /// The JWKS URL, for readiness checks.
    pub fn jwks_url(&self) -> &HttpUrl {
        &self.inner.jwks_url
    }

    /// Verifies a compact JWT and returns the identity it carries.
    ///
    /// A token verified before is answered from the cache until its `exp` (or the cache's TTL).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_for(token, None).await
    }

    /// Verifies a compact JWT, as `verify` does; a JWKS fetch it causes carries `request_id`, so the
    /// issuer's logs match ours.
    pub async fn verify_for(&self, token: &str, request_id: Option<&HeaderValue>) -> Result<Identity, AuthError> {
        if token.len() > self.inner.max_token_bytes {
            let limit = self.inner.max_token_bytes;
            return Err(AuthError::Malformed(format!("the token is longer than {limit} bytes")));
        }
        // The signature's check is boxed: it may fetch the key set, a future far larger than a
        // cache hit, which every request's future would otherwise carry inline. The box is paid
        // where the signature is checked (a miss, or every request with the cache off), beside
        // the check's own cost.
        let Some(cache) = &self.inner.verified else {
            return Box::pin(self.verify_signature(token, request_id)).await.map(|(identity, _)| identity);
        };
        if let Some((identity, expires)) = cache.get(token) {
            if SystemTime::now() < expires {
                return Ok(identity);
            }
            cache.invalidate(token);
        }
        let (identity, expires) = Box::pin(self.verify_signature(token, request_id)).await?;
        cache.insert(Arc::from(token), (identity.clone(), expires));
        Ok(identity)
    }

    async fn verify_signature(
        &self,
        token: &str,
        request_id: Option<&HeaderValue>,
    ) -> Result<(Identity, SystemTime), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !self.inner.algorithms.contains(&header.alg) {
            return Err(AuthError::Malformed(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Malformed("the token has no `kid`".to_owned()))?;
        let (key, key_alg) = self.key(&kid, request_id).await?;
        if key_alg != header.alg {
            return Err(AuthError::Malformed(format!("key `{kid}` is not for {:?}", header.alg)));
        }

        let mut validation = Validation::new(key_alg);
        validation.leeway = self.inner.leeway.as_secs();
        // A configured issuer or audience is required, not only checked when present: a token
        // without `iss` or `aud` was not issued for us.
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        if let Some(issuer) = &self.inner.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.inner.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.inner.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::InvalidSignature,
            ErrorKind::InvalidIssuer => AuthError::InvalidClaims("wrong issuer".to_owned()),
            ErrorKind::InvalidAudience => AuthError::InvalidClaims("wrong audience".to_owned()),
            ErrorKind::ImmatureSignature => AuthError::InvalidClaims("not valid yet".to_owned()),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::InvalidClaims(format!("missing `{claim}`")),
            _ => AuthError::Malformed(e.to_string()),
        })?;
        if let Some(typ) = &self.inner.typ
            && !header.typ.as_deref().is_some_and(|t| media_type_matches(t, typ))
        {
            return Err(AuthError::Malformed(format!("the token's `typ` is not `{typ}`")));
        }
        if HeaderValue::from_str(&data.claims.sub).is_err() {
            return Err(AuthError::Malformed("the `sub` claim has characters a header cannot carry".to_owned()));
        }
        // A signed `exp` far in the future is valid; it must not overflow the clock (the cache's
        // TTL bounds how long it is remembered anyway).
        let expires = UNIX_EPOCH.checked_add(Duration::from_secs(data.claims.exp)).unwrap_or(far_future());
        let mut identity = Identity::new(data.claims.sub, data.claims.scope.split_whitespace());
        for name in &self.inner.keep_claims {
            let value = match data.claims.other.get(name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => value.to_string(),
                _ => continue,
            };
            identity = identity.with_claim(name, value);
        }
        Ok((identity, expires))
    }

    fn cached(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.inner.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    async fn key(&self, kid: &str, request_id: Option<&HeaderValue>) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last = Arc::clone(&self.inner.refresh).lock_owned().await;
        // Another request may have refreshed while this one waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        // An unknown kid must not let clients make us hammer the issuer.
        if last.is_some_and(|at| at.elapsed() < self.inner.min_refresh) {
            return Err(self.missing());
        }
        *last = Some(Instant::now());
        // The fetch is a task of its own, which holds the lock until the keys are stored: were it
        // part of this request, a client that went away (a closed connection, a reset stream)
        // would cancel it, and every token would wait `jwks_min_refresh` for keys never fetched.
        let verifier = self.clone();
        let request_id = request_id.cloned();
        crate::detached::finish(async move {
            let fetched = verifier.fetch(request_id).await;
            verifier.store(fetched);
            drop(last);
        })
        .await;
        self.cached(kid).ok_or_else(|| self.missing())
    }

    /// Keeps what a fetch found: a set with usable keys replaces the keys known.
    fn store(&self, fetched: Result<HashMap<String, (DecodingKey, Algorithm)>, String>) {
        match fetched {
            Ok(keys) if keys.is_empty() => {
                // An issuer answering an empty or unusable set is broken, not rotating: keep
                // verifying with the keys we have.
                tracing::warn!(url = %self.inner.jwks_url, "the JWKS has no usable key; keeping the previous keys");
            }
            Ok(keys) => *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = keys,
            Err(e) => tracing::warn!(url = %self.inner.jwks_url, error = %e, "cannot fetch the JWKS"),
        }
    }

    /// Why a token's key is not known: the issuer's keys are, but not this one; or none are.
    fn missing(&self) -> AuthError {
        if self.has_keys() { AuthError::UnknownKey } else { AuthError::KeysUnavailable }
    }

    fn has_keys(&self) -> bool {
        !self.inner.keys.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    async fn fetch(&self, request_id: Option<HeaderValue>) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        // The request that found the unknown key, when there is one, so the issuer's logs match ours.
        let request_id = request_id.unwrap_or_else(|| HeaderValue::from_static("jwks-refresh"));
        let call = self.inner.issuer_host.get::<JwkSet>(self.inner.jwks_path.clone());
        let set =
            call.send_within(request_id, Instant::now() + JWKS_FETCH_TIMEOUT).await.map_err(|e| match e.cause() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })?;
        Ok(decoding_keys(&set))
    }
}

/// A time later than any token's: where a signed `exp` would overflow the clock.
fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
}

/// Whether a JOSE `typ` names `expected`: compared without case, `application/` optional
/// (RFC 7515 §4.1.9: `at+jwt` and `application/at+jwt` are the same type).
fn media_type_matches(typ: &str, expected: &str) -> bool {
    let bare = |t: &str| {
        let t = t.trim();
        let lower = t.to_ascii_lowercase();
        lower.strip_prefix("application/").map(str::to_owned).unwrap_or(lower)
    };
    bare(typ) == bare(expected)
}

/// The usable keys of a set, by `kid`; keys without a `kid`, an accepted `alg`, or valid
/// parameters are skipped.
fn decoding_keys(set: &JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else { continue };
        let Some(alg) = parse_algorithm(&alg.to_string()) else { continue };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid.clone(), (key, alg));
            }
            Err(e) => tracing::warn!(kid, error = %e, "skipping an unusable JWK"),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use services_mock::{MockConfig, Service};

    use super::*;

    fn config(jwks_url: &str) -> AuthConfig {
        toml::from_str(&format!("jwks_url = \"{jwks_url}\"")).unwrap()
    }

    #[tokio::test]
    async fn keys_are_fetched_from_the_jwks_url_with_its_path_and_query() {
        crate::install_crypto_provider();
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let metrics = Metrics::new();
        let verifier =
            JwtVerifier::new(&config(&format!("{}/.well-known/jwks.json?v=1", mock.url(Service::Auth))), &metrics);
        let identity = verifier.verify(&mock.token("42", "profile orders", 60)).await.unwrap();
        assert_eq!(identity.subject(), "42");
        assert!(identity.has_scope("orders") && !identity.has_scope("admin"));
        assert_eq!(mock.service(Service::Auth).stats.snapshot().requests, 1);
        // The fetch is counted as a call to the upstream `auth`.
        let text = metrics.render();
        assert!(text.contains(r#"bff_upstream_requests_total{upstream="auth",outcome="ok"} 1"#), "{text}");
    }

    /// Every request's future carries `verify_for`'s: the signature's check (which may fetch the
    /// key set, a whole upstream call) is boxed where it runs, not carried inline.
    #[tokio::test]
    async fn a_verification_carries_no_key_fetch_inline() {
        crate::install_crypto_provider();
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let verifier = JwtVerifier::new(&config(&format!("{}/.well-known/jwks.json", mock.url(Service::Auth))), &Metrics::new());
        let token = mock.token("42", "profile", 60);
        let verifying = verifier.verify_for(&token, None);
        assert!(std::mem::size_of_val(&verifying) <= 256, "verify_for's future is {} bytes", std::mem::size_of_val(&verifying));
        assert_eq!(verifying.await.unwrap().subject(), "42");
        assert_eq!(verifier.verify_for(&token, None).await.unwrap().subject(), "42", "from the cache");
    }

    /// The cache is bounded in bytes: large tokens take their size out of it, not one slot each.
    #[tokio::test]
    async fn the_token_cache_is_weighed_in_bytes() {
        crate::install_crypto_provider();
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let mut config = config(&format!("{}/.well-known/jwks.json", mock.url(Service::Auth)));
        config.token_cache_bytes = 64 * 1024;
        let verifier = JwtVerifier::new(&config, &Metrics::new());
        // Scopes of 3 KB make each token over 4 KB: sixty of them are four times the budget.
        let scope: String = (0..300).map(|i| format!("scope{i:04} ")).collect();
        for i in 0..60 {
            let token = mock.token(&format!("{}", i + 1), &scope, 60);
            assert!(token.len() > 4_000);
            verifier.verify(&token).await.unwrap();
        }
        let cache = verifier.inner.verified.as_ref().unwrap();
        cache.run_pending_tasks();
        assert!(cache.weighted_size() <= 64 * 1024, "{} bytes cached", cache.weighted_size());
        assert!(cache.entry_count() < 20, "{} tokens cached", cache.entry_count());
    }

    #[tokio::test]
    async fn the_claims_asked_for_are_kept_as_text() {
        crate::install_crypto_provider();
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let url = format!("{}/.well-known/jwks.json", mock.url(Service::Auth));
        let keep = ["tenant", "org", "admin", "groups", "absent"].map(String::from);
        let verifier = JwtVerifier::new(&config(&url), &Metrics::new()).keep_claims(keep);
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
        let token = mock.sign(&serde_json::json!({
            "sub": "42", "exp": exp, "tenant": "acme", "org": 7, "admin": true, "groups": ["a"], "other": "x",
        }));
        let identity = verifier.verify(&token).await.unwrap();
        assert_eq!(identity.claim("tenant").map(|c| &**c), Some("acme"));
        assert_eq!(identity.claim("org").map(|c| &**c), Some("7"));
        assert_eq!(identity.claim("admin").map(|c| &**c), Some("true"));
        // Not text, not asked for, or not there: none.
        for name in ["groups", "other", "absent"] {
            assert_eq!(identity.claim(name), None, "{name}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_issuer_leaves_no_keys() {
        crate::install_crypto_provider();
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let verifier =
            JwtVerifier::new(&config(&format!("http://127.0.0.1:{closed}/.well-known/jwks.json")), &Metrics::new());
        let error = verifier.verify(&mock.token("42", "profile", 60)).await.unwrap_err();
        assert!(matches!(error, AuthError::KeysUnavailable), "{error:?}");
    }

    /// A request whose client goes away while its token's keys are fetched (a closed connection,
    /// an HTTP/2 stream reset) does not take the fetch with it: the next token is verified with
    /// the keys that fetch brought, not refused for `jwks_min_refresh`.
    #[tokio::test]
    async fn a_fetch_outlives_the_request_that_started_it() {
        crate::install_crypto_provider();
        // An issuer that says when a fetch reaches it, and answers only when told to.
        let (reached, mut reached_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let answer = Arc::new(tokio::sync::Notify::new());
        let keys = services_mock::Keys::demo().unwrap();
        let jwks = serde_json::to_value(keys.jwks()).unwrap();
        let issuer = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get({
                let answer = answer.clone();
                move || async move {
                    let _ = reached.send(());
                    answer.notified().await;
                    axum::Json(jwks)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, issuer).await });
        let verifier = JwtVerifier::new(&config(&url), &Metrics::new());
        let token = keys.sign(Algorithm::RS256, &serde_json::json!({"sub": "42", "exp": u64::from(u32::MAX)})).unwrap();
        tokio::select! {
            _ = verifier.verify(&token) => panic!("verified before the issuer answered"),
            _ = reached_rx.recv() => {}
        }
        // The first request is gone; its fetch is still waiting on the issuer.
        answer.notify_one();
        let identity = verifier.verify(&token).await.expect("verified with the keys the first request's fetch brought");
        assert_eq!(identity.subject(), "42");
        assert!(reached_rx.try_recv().is_err(), "one fetch");
    }

    /// A verifier with the mock's keys and an issuer nobody listens on: no test depends on a fetch.
    fn offline_verifier() -> JwtVerifier {
        let keys = services_mock::Keys::demo().unwrap();
        JwtVerifier::with_keys(&config("http://127.0.0.1:9/.well-known/jwks.json"), keys.jwks())
    }

    proptest::proptest! {
        #![proptest_config(crate::slow_proptest(64))]

        /// Arbitrary bytes as a bearer token, or a well-formed header over arbitrary claims and
        /// signature: a 401 kind, never a panic, never a pass.
        #[test]
        fn any_token_is_refused_with_a_401_kind(
            raw in "[A-Za-z0-9_.=-]{0,300}|\\PC{0,100}",
            claims in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            signature in "[A-Za-z0-9_-]{0,90}",
        ) {
            crate::install_crypto_provider();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let verifier = offline_verifier();
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"demo-rs256"}"#);
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&claims);
            for token in [raw, format!("{header}.{payload}.{signature}")] {
                match runtime.block_on(verifier.verify(&token)) {
                    Ok(identity) => proptest::prop_assert!(false, "{token:?} passed as {identity:?}"),
                    Err(error) => proptest::prop_assert_eq!(error.status(), axum::http::StatusCode::UNAUTHORIZED, "{:?}", error),
                }
            }
        }
    }
}
