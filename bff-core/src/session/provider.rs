//! The OpenID Provider, as its confidential client sees it: discovery (read once, on first use),
//! the authorization URL, the token endpoint (code and refresh grants, HTTP Basic client
//! authentication), revocation, the end-session URL, and ID token verification (signature from
//! the provider's JWKS, `iss`, `aud`, `exp`, then `nonce`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use url::Url;

use crate::config::{AuthConfig, HttpUrl, OidcConfig};
use crate::observe::metrics::Metrics;
use crate::policy::auth::JwtVerifier;

/// The most bytes read of any answer of the provider's.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The claims of a verified ID token that a session keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdClaims {
    pub(crate) subject: String,
    pub(crate) name: Option<String>,
    pub(crate) email: Option<String>,
}

/// What the token endpoint answered.
#[derive(Debug, Deserialize)]
pub(crate) struct Tokens {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
    #[serde(default)]
    pub(crate) id_token: Option<String>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
}

/// Why the provider did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProviderError {
    /// It answered, and said no (`invalid_grant`: a code used twice, a refresh token revoked).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    /// It could not be reached, or answered what a provider must not.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
}

/// The discovered endpoints, and the verifier of the provider's ID tokens.
#[derive(Debug)]
pub(crate) struct Discovered {
    authorization_endpoint: Url,
    token_endpoint: Url,
    revocation_endpoint: Option<Url>,
    end_session_endpoint: Option<Url>,
    issuer: String,
    id_tokens: JwtVerifier,
}

#[derive(Debug, Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: HttpUrl,
    #[serde(default)]
    revocation_endpoint: Option<Url>,
    #[serde(default)]
    end_session_endpoint: Option<Url>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// The provider of `[oidc]`. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Provider(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: OidcConfig,
    http: reqwest::Client,
    metrics: Metrics,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl Provider {
    pub(crate) fn new(config: &OidcConfig, metrics: &Metrics) -> Result<Self, String> {
        // reqwest needs a process-wide rustls provider (ring, as everywhere here); idempotent.
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the identity provider's client: {e}"))?;
        let inner =
            Inner { config: config.clone(), http, metrics: metrics.clone(), discovered: tokio::sync::Mutex::new(None) };
        Ok(Self(Arc::new(inner)))
    }

    pub(crate) fn config(&self) -> &OidcConfig {
        &self.0.config
    }

    /// The discovery document's endpoints, read on first use (and again after a failure).
    pub(crate) async fn discovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        let mut slot = self.0.discovered.lock().await;
        if let Some(discovered) = &*slot {
            return Ok(discovered.clone());
        }
        let discovered = Arc::new(self.discover().await?);
        *slot = Some(discovered.clone());
        Ok(discovered)
    }

    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let config = &self.0.config;
        let issuer = config.issuer.as_str().trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let unavailable = |why: String| ProviderError::Unavailable(format!("{url}: {why}"));
        let response = self.0.http.get(&url).send().await.map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())));
        }
        let body = read_limited(response).await.map_err(unavailable)?;
        let document: Document =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a discovery document: {e}")))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was read from.
        if document.issuer.trim_end_matches('/') != issuer {
            return Err(unavailable(format!("it names the issuer `{}`, not `{issuer}`", document.issuer)));
        }
        if document.code_challenge_methods_supported.as_ref().is_some_and(|m| !m.iter().any(|m| m == "S256")) {
            return Err(unavailable("it does not support PKCE with S256".to_owned()));
        }
        for endpoint in [Some(&document.authorization_endpoint), Some(&document.token_endpoint)]
            .into_iter()
            .chain([document.revocation_endpoint.as_ref(), document.end_session_endpoint.as_ref()])
            .flatten()
        {
            if !matches!(endpoint.scheme(), "http" | "https") {
                return Err(unavailable(format!("`{endpoint}` is not an http(s) endpoint")));
            }
        }
        let verifier_config = AuthConfig::for_id_tokens(document.jwks_uri, &document.issuer, &config.client_id);
        let id_tokens = JwtVerifier::new(&verifier_config, &self.0.metrics)
            .keep_claims(["nonce", "name", "email"].map(str::to_owned));
        Ok(Discovered {
            authorization_endpoint: document.authorization_endpoint,
            token_endpoint: document.token_endpoint,
            revocation_endpoint: document.revocation_endpoint,
            end_session_endpoint: document.end_session_endpoint,
            issuer: document.issuer,
            id_tokens,
        })
    }

    /// Where the browser goes to sign in.
    pub(crate) fn authorize_url(
        &self,
        discovered: &Discovered,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
        login_hint: Option<&str>,
    ) -> Url {
        let config = &self.0.config;
        let mut url = discovered.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = login_hint {
            url.query_pairs_mut().append_pair("login_hint", hint);
        }
        url
    }

    /// Whether `iss` (RFC 9207, when the provider sends it back) is this provider's.
    pub(crate) fn is_issuer(discovered: &Discovered, iss: &str) -> bool {
        iss.trim_end_matches('/') == discovered.issuer.trim_end_matches('/')
    }

    /// Exchanges an authorization code, with its PKCE verifier.
    pub(crate) async fn exchange(
        &self,
        discovered: &Discovered,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, ProviderError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ];
        self.token_request(discovered, &form).await
    }

    /// Exchanges a refresh token for new tokens.
    pub(crate) async fn refresh(&self, discovered: &Discovered, refresh_token: &str) -> Result<Tokens, ProviderError> {
        self.token_request(discovered, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    async fn token_request(&self, discovered: &Discovered, form: &[(&str, &str)]) -> Result<Tokens, ProviderError> {
        let response = self.post(&discovered.token_endpoint, form).await?;
        let status = response.status();
        let body = read_limited(response).await.map_err(ProviderError::Unavailable)?;
        if status.is_client_error() {
            #[derive(Deserialize)]
            struct Refusal {
                error: String,
                #[serde(default)]
                error_description: Option<String>,
            }
            let refusal = serde_json::from_slice::<Refusal>(&body).map_err(|_| {
                ProviderError::Unavailable(format!("the token endpoint answered {status} without an OAuth error"))
            })?;
            let description = refusal.error_description.map(|d| format!(" ({d})")).unwrap_or_default();
            return Err(ProviderError::Refused(format!("{}{description}", refusal.error)));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!("the token endpoint answered {status}")));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("the token endpoint's answer is not tokens: {e}")))
    }

    /// Revokes a refresh token (RFC 7009), when the provider has an endpoint for it.
    pub(crate) async fn revoke(&self, discovered: &Discovered, refresh_token: &str) -> Result<(), ProviderError> {
        let Some(endpoint) = &discovered.revocation_endpoint else { return Ok(()) };
        let form = [("token", refresh_token), ("token_type_hint", "refresh_token")];
        let response = self.post(endpoint, &form).await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(ProviderError::Unavailable(format!("the revocation endpoint answered {status}"))),
        }
    }

    async fn post(&self, endpoint: &Url, form: &[(&str, &str)]) -> Result<reqwest::Response, ProviderError> {
        let config = &self.0.config;
        let secret = config.client_secret.as_ref().map(|s| s.expose()).unwrap_or_default();
        // RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined.
        let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!("{}:{}", encode(&config.client_id), encode(secret)));
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.0
            .http
            .post(endpoint.clone())
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("{endpoint}: {e}")))
    }

    /// Where the browser goes after this BFF forgot the session: the provider's end-session
    /// endpoint, when it has one, sending the browser back to `post_logout`.
    pub(crate) fn end_session_url(
        &self,
        discovered: &Discovered,
        id_token: Option<&str>,
        post_logout: &str,
    ) -> Option<Url> {
        let mut url = discovered.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.0.config.client_id)
            .append_pair("post_logout_redirect_uri", post_logout);
        if let Some(id_token) = id_token {
            url.query_pairs_mut().append_pair("id_token_hint", id_token);
        }
        Some(url)
    }

    /// Verifies an ID token: signed by the provider, for this client, not expired, and carrying
    /// the `nonce` this login sent.
    pub(crate) async fn verify_id_token(
        &self,
        discovered: &Discovered,
        token: &str,
        nonce: &str,
    ) -> Result<IdClaims, String> {
        let identity = discovered.id_tokens.verify_for(token, None).await.map_err(|e| e.to_string())?;
        let sent = identity.claim("nonce").map(|n| &**n);
        if !sent.is_some_and(|sent| constant_time_eq(sent, nonce)) {
            return Err("the ID token's nonce is not this login's".to_owned());
        }
        Ok(IdClaims {
            subject: identity.subject().to_owned(),
            name: identity.claim("name").map(|n| n.to_string()),
            email: identity.claim("email").map(|e| e.to_string()),
        })
    }
}

/// Compares secrets without leaking, through timing, how much of them matched.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The body of `response`, refused past [`MAX_ANSWER_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use services_mock::{MockConfig, Service};

    use super::*;

    async fn provider(mock: &services_mock::MockServices) -> (Provider, Arc<Discovered>) {
        crate::install_crypto_provider();
        let issuer = mock.url(Service::Auth);
        let text = format!("issuer = \"{issuer}\"\nclient_id = \"bff-web\"\nclient_secret = \"demo-web-secret\"");
        let config: OidcConfig = toml::from_str(&text).unwrap();
        let provider = Provider::new(&config, &Metrics::new()).unwrap();
        let discovered = provider.discovered().await.unwrap();
        (provider, discovered)
    }

    fn id_token(mock: &services_mock::MockServices, nonce: &str, exp_in: i64) -> String {
        let now = store_now();
        mock.sign(&serde_json::json!({
            "iss": mock.url(Service::Auth), "aud": "bff-web", "sub": "42", "name": "Ada",
            "nonce": nonce, "iat": now, "exp": now + exp_in,
        }))
    }

    fn store_now() -> i64 {
        i64::try_from(super::super::store::now_s()).unwrap()
    }

    #[tokio::test]
    async fn an_id_token_must_be_signed_for_this_client_unexpired_and_carry_this_logins_nonce() {
        let mock = services_mock::start(&MockConfig::ephemeral()).await.unwrap();
        let (provider, discovered) = provider(&mock).await;
        let good = id_token(&mock, "n-1", 60);
        let claims = provider.verify_id_token(&discovered, &good, "n-1").await.unwrap();
        assert_eq!((claims.subject.as_str(), claims.name.as_deref()), ("42", Some("Ada")));
        // Another login's nonce (a replayed ID token).
        let error = provider.verify_id_token(&discovered, &good, "n-2").await.unwrap_err();
        assert!(error.contains("nonce"), "{error}");
        // A payload changed after signing: the `sub` swapped for another user's.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let forged = String::from_utf8(payload).unwrap().replace("\"42\"", "\"43\"");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
        let error = provider.verify_id_token(&discovered, &parts.join("."), "n-1").await.unwrap_err();
        assert!(error.contains("signature"), "{error}");
        // Expired, or for another client.
        let expired = id_token(&mock, "n-1", -3600);
        assert!(provider.verify_id_token(&discovered, &expired, "n-1").await.unwrap_err().contains("expired"));
        let now = store_now();
        let other = mock.sign(&serde_json::json!({
            "iss": mock.url(Service::Auth), "aud": "another-client", "sub": "42", "nonce": "n-1", "exp": now + 60,
        }));
        assert!(provider.verify_id_token(&discovered, &other, "n-1").await.unwrap_err().contains("audience"));
        // An access token of the same issuer is not an ID token (its `aud` is the API's).
        let access = mock.token("42", "profile", 60);
        assert!(provider.verify_id_token(&discovered, &access, "n-1").await.is_err());
    }

    /// A provider whose document names another issuer (a mix-up, or a stand-in) is not used.
    #[tokio::test]
    async fn a_discovery_document_naming_another_issuer_is_refused() {
        crate::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let document = serde_json::json!({
            "issuer": "https://idp.example", "authorization_endpoint": "https://idp.example/authorize",
            "token_endpoint": "https://idp.example/token", "jwks_uri": "https://idp.example/jwks",
        });
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(document) }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let text = format!("issuer = \"{issuer}\"\nclient_id = \"bff-web\"\nclient_secret = \"s\"");
        let provider = Provider::new(&toml::from_str(&text).unwrap(), &Metrics::new()).unwrap();
        match provider.discovered().await {
            Err(ProviderError::Unavailable(why)) => assert!(why.contains("names the issuer"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
