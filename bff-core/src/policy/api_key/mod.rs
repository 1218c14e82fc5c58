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
use crate::config::{ApiKeysConfig, KeyHash};

/// The verified API client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    /// The client's configured name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: Arc<str>,
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
                (c.key_sha256.0, ApiClient { name: Arc::from(name.as_str()), tier: Arc::from(c.tier.as_str()) })
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
pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(Sha256::digest(key.as_bytes()).into())
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
            ApiClientConfig { tier: "pro".into(), key_sha256: hash_key("s3cret") },
        )]);
        let keys = ApiKeys::new(&ApiKeysConfig { header: "x-api-key".parse().unwrap(), clients });
        let client = keys.verify(b"s3cret").unwrap();
        assert_eq!((&*client.name, &*client.tier), ("acme", "pro"));
        assert!(keys.verify(b"s3cret ").is_none());
        assert!(keys.verify(b"").is_none());
    }

    #[test]
    fn known_hash() {
        assert_eq!(hash_key("abc").to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
