//! Bearer JWT authentication against a JWKS, and the verified [`Identity`] as an extractor.
//!
//! The identity is established once, by the layer in front of the BFF's routes; handlers take
//! [`Identity`] as an argument. No identity header sent by a client is ever trusted.

mod error;
mod jwks;
pub(crate) mod layer;
mod ring_crypto;

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::Algorithm;

use crate::config::JwtAlgorithm;
use crate::identity::CallerHeaders;

pub use error::AuthError;
pub use jwks::JwtVerifier;

/// The verified caller of a request. Cheap to clone: the verified claims are shared, so taking it
/// in a handler (or serving it from the token cache) copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(Arc<VerifiedClaims>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct VerifiedClaims {
    subject: String,
    /// Hashed with foldhash: looked up on every request with a scope check.
    scopes: HashSet<String, foldhash::fast::RandomState>,
    /// The other claims kept ([`JwtVerifier::keep_claims`]), as text.
    claims: Vec<(Box<str>, Arc<str>)>,
    /// What upstream calls carry for this caller, built once per token.
    headers: Option<CallerHeaders>,
}

impl Identity {
    /// An identity with `subject` and `scopes`, as a verified token would give. A subject that
    /// cannot be a header value is sent to no upstream (the verifier refuses such tokens).
    pub fn new(subject: impl Into<String>, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let subject = subject.into();
        let scopes: HashSet<String, _> = scopes.into_iter().map(Into::into).collect();
        let headers = CallerHeaders::user(&subject, scopes.iter().map(String::as_str));
        Self(Arc::new(VerifiedClaims { subject, scopes, claims: Vec::new(), headers }))
    }

    /// This identity with the claim `name` set to `value` (a string, or a number or boolean as
    /// JSON writes it).
    pub fn with_claim(mut self, name: &str, value: impl Into<String>) -> Self {
        let claims = Arc::make_mut(&mut self.0);
        claims.claims.retain(|(n, _)| &**n != name);
        claims.claims.push((Box::from(name), Arc::from(value.into())));
        self
    }

    /// The claim `name`, when the verifier keeps it and the token has it.
    pub fn claim(&self, name: &str) -> Option<&Arc<str>> {
        self.0.claims.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    /// About how many bytes this identity holds, for the token cache's weigher.
    pub(crate) fn weight(&self) -> usize {
        const OVERHEAD: usize = 160;
        let claims = &self.0;
        let kept = claims.claims.iter().map(|(n, v)| n.len() + v.len() + 48).sum::<usize>();
        OVERHEAD + claims.subject.len() * 2 + claims.scopes.iter().map(|s| s.len() * 2 + 16).sum::<usize>() + kept
    }

    /// The identity headers upstream calls carry (`X-User-Id`, `X-User-Scopes`).
    pub fn caller_headers(&self) -> Option<&CallerHeaders> {
        self.0.headers.as_ref()
    }

    /// The `sub` claim: the user id.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The scopes granted (`scope` claim, space-separated), in no particular order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.0.scopes.iter().map(String::as_str)
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only the auth layer inserts an Identity; without it there is no identity to give.
        parts.extensions.get::<Identity>().cloned().ok_or(AuthError::MissingToken)
    }
}

/// Makes `ring` verify JWT signatures in this process (see `ring_crypto`) unless a provider was
/// chosen already; idempotent. For the application to call: `jsonwebtoken` keeps one provider per
/// process, and without this call it uses its RustCrypto one (correct, several times slower).
pub fn install_ring_jwt_verifier() {
    ring_crypto::install();
}

/// The `jsonwebtoken` form of a configured algorithm.
pub(crate) fn algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The asymmetric algorithms a key in a JWKS may name; `HS*` and `none` never are.
pub(crate) fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}
