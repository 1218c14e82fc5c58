//! The `Idempotency-Key` request header, checked once at the edge of a write, and scoped to its
//! caller before it leaves the BFF.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use sha2::{Digest, Sha256};

use crate::field;
use crate::identity::{CallerHeaders, Tenant};
use crate::problem::Problem;

/// The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header): a client's
/// name for one write, so a repeat after a lost answer does not write twice. Forward it to the
/// upstream that performs the write ([`Call::idempotency_key`](crate::Call::idempotency_key)):
/// every call's key is sent scoped to the verified caller (the hex SHA-256 of its account, or
/// user id, and the key), so two tenants or two users using the same key never meet upstream.
///
/// As an argument it is required (400 `IDEMPOTENCY_KEY_REQUIRED` when absent); as
/// `Option<IdempotencyKey>` it is optional. Either way a key longer than 255 bytes or with
/// characters other than visible ASCII is a 400 `INVALID_IDEMPOTENCY_KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub HeaderValue);

/// The header's name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

impl IdempotencyKey {
    fn from_parts(parts: &Parts) -> Result<Option<Self>, IdempotencyKeyRejection> {
        // One key (a structured-field item): with two, which one a reader takes is its choice.
        let one = field::one(&parts.headers, IDEMPOTENCY_KEY).map_err(|_| IdempotencyKeyRejection::Invalid)?;
        let Some(value) = one else { return Ok(None) };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyRejection::Invalid);
        }
        Ok(Some(Self(value.clone())))
    }
}

/// Why an `Idempotency-Key` was refused: a 400 problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyKeyRejection {
    /// The write needs one and the request has none (`IDEMPOTENCY_KEY_REQUIRED`).
    Missing,
    /// Empty, too long, not visible ASCII, or sent twice (`INVALID_IDEMPOTENCY_KEY`).
    Invalid,
}

impl IntoResponse for IdempotencyKeyRejection {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Missing => {
                let detail = "this write needs an Idempotency-Key header";
                Problem::new(StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED", detail)
            }
            Self::Invalid => {
                let detail =
                    format!("send one Idempotency-Key, of 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters");
                Problem::new(StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY", detail)
            }
        };
        problem.into_response()
    }
}

/// The key an upstream sees for `key` sent on behalf of `caller`: the hex SHA-256 of the caller's
/// tenant (its API client's account, else its user id) and the key.
///
/// A caller's repeat maps to the same upstream key, so idempotency still holds; another tenant's
/// use of the same key maps elsewhere, so it can neither learn that the key was taken (a `422`)
/// nor make another's write fail. The hash is not a secret: it partitions, and a client cannot
/// choose the upstream key, since whatever it sends is scoped again with its own identity.
pub(crate) fn scoped(caller: Option<&CallerHeaders>, key: &HeaderValue) -> HeaderValue {
    let mut hash = Sha256::new();
    hash.update(b"bff-idempotency-key/1\0");
    // Header values hold no NUL, so the parts cannot run into one another.
    match caller.and_then(CallerHeaders::tenant) {
        Some(Tenant { kind, id }) => {
            hash.update(kind.as_bytes());
            hash.update(b"\0");
            hash.update(id);
        }
        None => hash.update(b"anonymous"),
    }
    hash.update(b"\0");
    hash.update(key.as_bytes());
    let mut hex = [0u8; 64];
    for (i, byte) in hash.finalize().iter().enumerate() {
        hex[2 * i] = HEX[usize::from(byte >> 4)];
        hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts)?.ok_or(IdempotencyKeyRejection::Missing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Self::from_parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_to_the_tenant_and_stable_for_it() {
        let key = HeaderValue::from_static("order-1");
        let user = |id: &str| CallerHeaders::user(id, ["orders"]);
        let account = |id: &str| CallerHeaders::partner(id, ["orders"]);
        let of = |caller: Option<CallerHeaders>| scoped(caller.as_ref(), &key);
        // The same caller and key: the same upstream key, whatever its scopes.
        assert_eq!(of(user("42")), of(CallerHeaders::user("42", ["profile"])));
        assert_eq!(of(user("42")).len(), 64);
        assert!(of(user("42")).as_bytes().iter().all(u8::is_ascii_hexdigit));
        // Anyone else: another one.
        let all = [of(user("42")), of(user("43")), of(account("42")), of(account("acct-2")), of(None)];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(of(user("42")), key, "the client's key never leaves as it came");
        assert_ne!(scoped(user("42").as_ref(), &HeaderValue::from_static("order-2")), of(user("42")));
    }

    proptest::proptest! {
        /// Any header bytes: a key of 1 to 255 visible ASCII characters, taken as sent, or a 400.
        #[test]
        fn an_idempotency_key_is_visible_ascii_or_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
            let (mut parts, ()) = http::Request::new(()).into_parts();
            parts.headers.insert(IDEMPOTENCY_KEY, value.clone());
            match IdempotencyKey::from_parts(&parts) {
                Ok(Some(key)) => {
                    proptest::prop_assert_eq!(&key.0, &value);
                    proptest::prop_assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&bytes.len()));
                    proptest::prop_assert!(bytes.iter().all(u8::is_ascii_graphic));
                }
                Ok(None) => proptest::prop_assert!(false, "a header that is there was not seen"),
                Err(rejection) => {
                    proptest::prop_assert_eq!(rejection, IdempotencyKeyRejection::Invalid);
                    proptest::prop_assert_eq!(rejection.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}
