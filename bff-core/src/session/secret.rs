//! The random values of a login and a session, and what the store keys them by.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// 256 random bits from the system's CSPRNG, base64url (43 characters): session and login ids,
/// `state`, `nonce` and the PKCE verifier.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 32];
    // The system's generator failing is not something to serve on: no id is better than a weak one.
    SystemRandom::new().fill(&mut bytes).unwrap_or_else(|_| panic!("the system's random generator failed"));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE `code_challenge` of a verifier (RFC 7636 S256).
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What the store keeps a cookie's id under: its SHA-256, so the store's contents cannot be
/// replayed as cookies.
pub(crate) fn store_key(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = String::with_capacity(64);
    for byte in digest {
        key.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        key.push(char::from_digit(u32::from(byte & 15), 16).unwrap_or('0'));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_distinct_and_cookie_safe() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), super::super::cookie::ID_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn the_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(store_key("x").len(), 64);
    }
}
