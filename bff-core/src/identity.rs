//! Who a request is from and which request it is, as the headers every upstream call carries: the
//! verified caller and the request id. A leaf: the edge, the credentials, the request context and
//! the outbound stack all read it, and it reads none of them.
//!
//! The identity headers are set by the outbound stack from what the gateway verified (a token's
//! `sub` and `scope`, an API client's account and scopes), never from what a client sent: a
//! call's own header of the same name is replaced or removed.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header carrying the request id, in and out.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name: a lookup by it does not parse the name again.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The user id (`sub`) of a verified token.
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// The scopes granted to the caller, space-separated, sorted.
pub const USER_SCOPES: HeaderName = HeaderName::from_static("x-user-scopes");
/// The account of a verified API client.
pub const PARTNER_ACCOUNT: HeaderName = HeaderName::from_static("x-partner-account");

/// Every identity header, in a fixed order.
pub(crate) const NAMES: [HeaderName; 3] = [USER_ID, USER_SCOPES, PARTNER_ACCOUNT];

/// A caller as logs and spans write it, `user:<id>` or `account:<name>`, without building a
/// string: bytes of the header value that are not UTF-8 are written as U+FFFD.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tenant<'a> {
    /// `user` or `account`.
    pub(crate) kind: &'static str,
    /// The user id or the account, as the header value holds it.
    pub(crate) id: &'a [u8],
}

impl fmt::Display for Tenant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        f.write_str(":")?;
        for chunk in self.id.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

/// The identity headers of one caller, built once (per verified token, per API client) and shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerHeaders(Arc<[Option<HeaderValue>; 3]>);

impl CallerHeaders {
    /// A user's: `X-User-Id` and `X-User-Scopes`. `None` when the subject cannot be a header value.
    pub(crate) fn user<'a>(subject: &str, scopes: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let id = HeaderValue::try_from(subject).ok()?;
        Some(Self(Arc::new([Some(id), scopes_value(scopes), None])))
    }

    /// An API client's: `X-Partner-Account` and `X-User-Scopes`. `None` when the account cannot
    /// be a header value.
    pub(crate) fn partner<'a>(account: &str, scopes: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let account = HeaderValue::try_from(account).ok()?;
        Some(Self(Arc::new([None, scopes_value(scopes), Some(account)])))
    }

    /// Whose request this is, for logs and spans and for scoping idempotency keys: an API
    /// client's account (the tenant), else a user's id.
    pub(crate) fn tenant(&self) -> Option<Tenant<'_>> {
        match &*self.0 {
            [_, _, Some(account)] => Some(Tenant { kind: "account", id: account.as_bytes() }),
            [Some(user), _, None] => Some(Tenant { kind: "user", id: user.as_bytes() }),
            [None, _, None] => None,
        }
    }

    /// Sets these headers on `headers`, replacing any of the same names, and removes the
    /// identity headers this caller does not have. With no caller, removes them all.
    pub(crate) fn apply(caller: Option<&Self>, headers: &mut HeaderMap) {
        // A call's own headers are most often none: then there is nothing to remove, and each
        // removal would hash its name for nothing.
        let fresh = headers.is_empty();
        for (i, name) in NAMES.iter().enumerate() {
            match caller.and_then(|c| c.0[i].clone()) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None if fresh => {}
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// The scopes, sorted and space-separated; `None` when there are none or they cannot be a
/// header value.
fn scopes_value<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Option<HeaderValue> {
    let mut scopes: Vec<&str> = scopes.into_iter().collect();
    scopes.sort_unstable();
    scopes.dedup();
    if scopes.is_empty() {
        return None;
    }
    HeaderValue::try_from(scopes.join(" ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_headers_replace_and_remove_what_a_call_had() {
        let mut headers = HeaderMap::new();
        headers.insert(USER_ID, HeaderValue::from_static("999"));
        headers.insert(PARTNER_ACCOUNT, HeaderValue::from_static("other"));
        let user = CallerHeaders::user("42", ["orders", "profile", "orders"]).unwrap();
        CallerHeaders::apply(Some(&user), &mut headers);
        assert_eq!(headers[USER_ID], "42");
        assert_eq!(headers[USER_SCOPES], "orders profile");
        assert!(!headers.contains_key(PARTNER_ACCOUNT));
        CallerHeaders::apply(None, &mut headers);
        assert!(headers.is_empty());
        assert!(CallerHeaders::user("4\n2", []).is_none());
        let partner = CallerHeaders::partner("demo", []).unwrap();
        CallerHeaders::apply(Some(&partner), &mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[PARTNER_ACCOUNT], "demo");
    }

    #[test]
    fn a_caller_is_named_by_its_account_else_its_user() {
        let user = CallerHeaders::user("jürgen", ["orders"]).unwrap();
        assert_eq!(user.tenant().map(|t| t.to_string()).as_deref(), Some("user:jürgen"));
        let partner = CallerHeaders::partner("acme", ["orders"]).unwrap();
        assert_eq!(partner.tenant().map(|t| t.to_string()).as_deref(), Some("account:acme"));
        // Bytes that are not UTF-8 read as from_utf8_lossy reads them.
        let odd = Tenant { kind: "user", id: b"a\xffb\xe2\x82" };
        assert_eq!(odd.to_string(), format!("user:{}", String::from_utf8_lossy(b"a\xffb\xe2\x82")));
        assert_eq!(odd.to_string(), "user:a\u{FFFD}b\u{FFFD}");
    }
}
