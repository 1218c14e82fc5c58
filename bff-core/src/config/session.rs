//! Browser sessions: the OpenID Provider a BFF signs users in with (`[oidc]`), and where and how
//! long their sessions are kept (`[session]`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{HttpUrl, Origin};

/// The OpenID Provider this BFF is a confidential client of (code flow with PKCE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The provider's issuer URL: its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration`, and must name this issuer.
    pub issuer: HttpUrl,
    /// This BFF's client id at the provider.
    pub client_id: String,
    /// This BFF's client secret (sent with HTTP Basic). Keep it out of files:
    /// `BFF_OIDC__CLIENT_SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// The scopes asked for; `openid` is required. The granted ones become the session's scopes.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Where the provider sends the browser back, registered with it; by default
    /// `<the request's origin>/bff/callback`. Set it behind a proxy that terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<HttpUrl>,
    /// Where the provider sends the browser after logout, registered with it; by default
    /// `<the request's origin>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_logout_redirect_uri: Option<HttpUrl>,
    /// The longest wait for the provider (discovery, the token endpoint).
    #[serde(with = "humantime_serde", default = "default_oidc_timeout")]
    pub timeout: Duration,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".to_owned(), "profile".to_owned()]
}

fn default_oidc_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Server-side browser sessions: the browser holds only an `HttpOnly` cookie naming one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Where sessions are kept: `memory` (this process) or `redis` (`redis.url`, shared by
    /// replicas: a session outlives a replica's restart, and a logout holds everywhere).
    #[serde(default)]
    pub store: SessionStoreKind,
    /// The most bytes the `memory` store holds; past it, the least recently used sessions go.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: u64,
    /// A session unused this long ends (sliding expiry).
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// A session ends this long after its login, however much it is used (absolute expiry).
    #[serde(with = "humantime_serde", default = "default_max_lifetime")]
    pub max_lifetime: Duration,
    /// The access token is refreshed when it expires within this.
    #[serde(with = "humantime_serde", default = "default_refresh_before")]
    pub refresh_before: Duration,
    /// How long a login may take at the provider, from `/bff/login` to `/bff/callback`.
    #[serde(with = "humantime_serde", default = "default_login_timeout")]
    pub login_timeout: Duration,
    /// Origins besides this BFF's own (and `cors.allow_origins`) whose pages may make
    /// cookie-authenticated calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<Origin>,
}

fn default_memory_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(60)
}

fn default_login_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionStoreKind {
    /// In this process, bounded by `session.memory_bytes`.
    #[default]
    Memory,
    /// In Redis (`redis.url`), shared by every replica.
    Redis,
}

impl SessionConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (key, value) in [
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("login_timeout", self.login_timeout),
        ] {
            if value.is_zero() {
                return Err((format!("session.{key}"), "must be greater than zero".into()));
            }
        }
        if self.store == SessionStoreKind::Memory && self.memory_bytes < 64 * 1024 {
            return Err(("session.memory_bytes".into(), "must be at least 65536 (64 KiB)".into()));
        }
        Ok(())
    }
}

impl OidcConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(("oidc.scopes".into(), "must include `openid`".into()));
        }
        if let Some(bad) = self.scopes.iter().find(|s| s.is_empty() || s.chars().any(|c| !c.is_ascii_graphic())) {
            return Err(("oidc.scopes".into(), format!("`{bad}` is not a scope (printable ASCII, no spaces)")));
        }
        if self.client_id.is_empty() {
            return Err(("oidc.client_id".into(), "must not be empty".into()));
        }
        if self.client_secret.is_none() {
            let message = "required: the provider authenticates this BFF by it; set BFF_OIDC__CLIENT_SECRET";
            return Err(("oidc.client_secret".into(), message.into()));
        }
        if self.timeout.is_zero() {
            return Err(("oidc.timeout".into(), "must be greater than zero".into()));
        }
        Ok(())
    }
}

/// A secret value: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for sending.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `--print-config` redacts `client_secret` by its key; this is the value it replaces.
        serializer.serialize_str(&self.0)
    }
}
