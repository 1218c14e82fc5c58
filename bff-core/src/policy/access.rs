//! Who may call a route, declared next to the route in the BFF crate ([`crate::Routes`]), and
//! the layer that checks it once the caller is authenticated.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};

use super::api_key::ApiClient;
use super::auth::{AuthError, Identity};
use crate::middleware::Guard;
use crate::problem::Problem;

/// The access a route requires.
///
/// Every route says which: `Access::public()` routes are reached without credentials (the
/// credentials layer does not run for them); every other route needs an authenticated caller
/// (a verified token, or a known API key) holding each listed scope. A missing scope is a 403
/// `AUTH_INSUFFICIENT_SCOPE` naming it (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Public,
    Scopes(Arc<[Box<str>]>),
}

impl Access {
    /// Anyone, without credentials (API documents, say).
    pub fn public() -> Self {
        Self(Kind::Public)
    }

    /// Any authenticated caller, whatever its scopes.
    pub fn authenticated() -> Self {
        Self(Kind::Scopes(Arc::from([])))
    }

    /// An authenticated caller granted `scope`.
    pub fn scope(scope: &str) -> Self {
        Self::scopes([scope])
    }

    /// An authenticated caller granted every one of `scopes`.
    pub fn scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Kind::Scopes(scopes.into_iter().map(Box::from).collect()))
    }

    /// Whether the route is reached without credentials.
    pub fn is_public(&self) -> bool {
        self.0 == Kind::Public
    }

    /// The scopes required (none for a public route or any authenticated caller).
    pub fn required(&self) -> impl Iterator<Item = &str> {
        let scopes: &[Box<str>] = match &self.0 {
            Kind::Public => &[],
            Kind::Scopes(scopes) => scopes,
        };
        scopes.iter().map(|s| &**s)
    }

    /// The first required scope that `granted` lacks.
    pub(crate) fn missing(&self, granted: impl Fn(&str) -> bool) -> Option<&str> {
        self.required().find(|scope| !granted(scope))
    }
}

/// Every protected route's access, by route pattern.
pub(crate) type AccessTable = Arc<HashMap<String, Access>>;

/// Checks the authenticated caller (an [`Identity`] or an [`ApiClient`], inserted by the
/// credentials layer before it) against its route's [`Access`]: a [`Guard`], no future of its own.
#[derive(Debug, Clone)]
pub(crate) struct CheckAccess(pub(crate) AccessTable);

impl Guard for CheckAccess {
    fn refuse(&self, request: &Request) -> Option<Response> {
        let Some(access) = request.extensions().get::<MatchedPath>().and_then(|p| self.0.get(p.as_str())) else {
            // `Routes` declares every route's access; a route without one is refused, not let in.
            tracing::error!("a route without a declared access was reached; refused");
            let detail = "the gateway failed to handle this request";
            return Some(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", detail).into_response());
        };
        let extensions = request.extensions();
        if let Some(identity) = extensions.get::<Identity>() {
            let missing = access.missing(|scope| identity.has_scope(scope))?;
            return Some(AuthError::InsufficientScope(missing.to_owned()).into_response());
        }
        if let Some(client) = extensions.get::<ApiClient>() {
            let missing = access.missing(|scope| client.has_scope(scope))?;
            let mut response = AuthError::InsufficientScope(missing.to_owned()).into_response();
            // Not a bearer token: RFC 6750's challenge does not apply.
            response.headers_mut().remove(WWW_AUTHENTICATE);
            return Some(response);
        }
        // No credentials layer ran: the gateway has neither `auth` nor `api_keys`.
        Some(AuthError::MissingToken.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_scope_is_named() {
        let access = Access::scopes(["profile", "orders"]);
        assert_eq!(access.missing(|s| s == "profile"), Some("orders"));
        assert_eq!(access.missing(|_| true), None);
        assert_eq!(Access::authenticated().missing(|_| false), None);
        assert!(Access::public().is_public() && !Access::authenticated().is_public());
    }
}
