//! JWT signature checks on `ring`, which is already linked for TLS.
//!
//! `jsonwebtoken`'s RustCrypto backend rebuilds the RSA key and runs pure-Rust big-number code on
//! every check; `ring` does the same checks several times faster (`cargo bench -p bff-bench`,
//! `jwt_verify_*`). Keys from a JWKS (RSA modulus/exponent, EC points) verify
//! here; anything else, and all signing, stays with the RustCrypto provider.

use std::sync::OnceLock;

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::Result;
use jsonwebtoken::signature::{Error, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8>, params: &'static sig::RsaParameters },
    Ec { point: Vec<u8>, params: &'static sig::EcdsaVerificationAlgorithm },
}

struct RingVerifier {
    algorithm: Algorithm,
    key: Key,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), Error> {
        let checked = match &self.key {
            Key::Rsa { n, e, params } => RsaPublicKeyComponents { n, e }.verify(params, message, signature),
            Key::Ec { point, params } => UnparsedPublicKey::new(*params, point).verify(message, signature),
        };
        checked.map_err(|_| Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_params(algorithm: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn ec_params(algorithm: Algorithm, point: &[u8]) -> Option<&'static sig::EcdsaVerificationAlgorithm> {
    // JWS ECDSA signatures are the fixed-width r||s; JWK points are uncompressed (0x04 || x || y).
    match (algorithm, point.first(), point.len()) {
        (Algorithm::ES256, Some(0x04), 65) => Some(&sig::ECDSA_P256_SHA256_FIXED),
        (Algorithm::ES384, Some(0x04), 97) => Some(&sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    }
}

/// The `ring` form of a key, for the keys a JWKS yields; `None` for the rest.
fn ring_key(algorithm: Algorithm, key: &DecodingKey) -> Option<Key> {
    match (key.family(), key.kind()) {
        (AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            rsa_params(algorithm).map(|params| Key::Rsa { n: n.clone(), e: e.clone(), params })
        }
        (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
            ec_params(algorithm, point).map(|params| Key::Ec { point: point.clone(), params })
        }
        _ => None,
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let algorithm = *algorithm;
    match ring_key(algorithm, key) {
        Some(key) => Ok(Box::new(RingVerifier { algorithm, key })),
        None => (DEFAULT_PROVIDER.verifier_factory)(&algorithm, key),
    }
}

/// Makes `ring` the JWT verifier of this process, if no provider was chosen yet.
pub(crate) fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: DEFAULT_PROVIDER.signer_factory,
        verifier_factory: new_verifier,
        key_utils: DEFAULT_PROVIDER.key_utils.clone(),
    });
    let _ = provider.install_default();
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn jwks_keys_verify_on_ring_and_forgeries_fail() {
        let keys = services_mock::Keys::demo().unwrap();
        for (algorithm, kid) in [(Algorithm::RS256, "demo-rs256"), (Algorithm::ES256, "demo-es256")] {
            let decoding = DecodingKey::from_jwk(keys.jwks().find(kid).unwrap()).unwrap();
            let key = ring_key(algorithm, &decoding).expect("a JWKS key takes the ring path");
            let verifier = RingVerifier { algorithm, key };
            let token = keys.sign(algorithm, &serde_json::json!({"sub": "42"})).unwrap();
            let (message, signature) = token.rsplit_once('.').unwrap();
            let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            assert!(verifier.verify(message.as_bytes(), &signature).is_ok(), "{kid}");
            signature[5] ^= 1;
            assert!(verifier.verify(message.as_bytes(), &signature).is_err(), "{kid}: a forged signature passed");
            assert!(ring_key(Algorithm::ES384, &decoding).is_none(), "{kid}: wrong algorithm for the key");
        }
    }
}
