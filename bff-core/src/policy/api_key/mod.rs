//! API-key authentication: keys stored as SHA-256 hashes, compared in constant time.
//!
//! The verified client is handed to handlers as an [`ApiClient`] extractor.

pub(crate) mod layer;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::AuthError;
use crate::config::ApiKeysConfig;
use crate::identity::CallerHeaders;

/// The verified API client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    /// The client's configured name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: Arc<str>,
    /// The account whose data it may read; another account's users and orders do not exist for it.
    pub account: Arc<str>,
    /// The scopes it is granted.
    pub scopes: Arc<[Box<str>]>,
    /// What upstream calls carry for it (`X-Partner-Account`, `X-User-Scopes`).
    headers: Option<CallerHeaders>,
}

impl ApiClient {
    /// A client named `name` of `tier`, its own account, without scopes.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, tier: &str) -> Self {
        Self {
            name: Arc::from(name),
            tier: Arc::from(tier),
            account: Arc::from(name),
            scopes: Arc::from([]),
            headers: None,
        }
    }

    /// The identity headers upstream calls carry.
    pub fn caller_headers(&self) -> Option<&CallerHeaders> {
        self.headers.as_ref()
    }

    /// Whether the client is granted `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ApiClient {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<ApiClient>().cloned().ok_or(AuthError::MissingApiKey)
    }
}

/// The configured keys, ready to check.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    header: HeaderName,
    clients: Arc<[([u8; 32], ApiClient)]>,
}

impl ApiKeys {
    /// From validated config.
    pub fn new(config: &ApiKeysConfig) -> Self {
        let clients = config
            .clients
            .iter()
            .map(|(name, c)| {
                let client = ApiClient {
                    name: Arc::from(name.as_str()),
                    tier: Arc::from(c.tier.as_str()),
                    account: Arc::from(c.account.as_str()),
                    scopes: c.scopes.iter().map(|s| Box::from(s.as_str())).collect(),
                    headers: CallerHeaders::partner(&c.account, c.scopes.iter().map(String::as_str)),
                };
                (c.key_sha256.0, client)
            })
            .collect();
        Self { header: config.header.0.clone(), clients }
    }

    /// The header the key is read from.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The client owning `key`, if any. Every stored hash is compared, in constant time each.
    pub fn verify(&self, key: &[u8]) -> Option<ApiClient> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = None;
        for (stored, client) in self.clients.iter() {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(client.clone());
            }
        }
        found
    }
}

/// The SHA-256 of a key, as `key_sha256` stores it.
#[cfg(any(test, feature = "test-util"))]
pub fn hash_key(key: &str) -> crate::config::KeyHash {
    crate::config::KeyHash(Sha256::digest(key.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ApiClientConfig;

    #[test]
    fn verifies_by_hash() {
        let clients = BTreeMap::from([(
            "acme".to_owned(),
            ApiClientConfig {
                tier: "pro".into(),
                key_sha256: hash_key("s3cret"),
                account: "acme".into(),
                scopes: vec!["orders".into()],
            },
        )]);
        let keys = ApiKeys::new(&ApiKeysConfig { header: "x-api-key".parse().unwrap(), clients });
        let client = keys.verify(b"s3cret").unwrap();
        assert_eq!((&*client.name, &*client.tier, &*client.account), ("acme", "pro", "acme"));
        assert!(client.has_scope("orders") && !client.has_scope("profile"));
        assert!(keys.verify(b"s3cret ").is_none());
        assert!(keys.verify(b"").is_none());
    }

    #[test]
    fn known_hash() {
        assert_eq!(hash_key("abc").to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
