//! The layer that checks who may call a route ([`Access`], declared next to the route in the
//! BFF crate) once the caller is authenticated.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};

use super::api_key::ApiClient;
use super::auth::{AuthError, Identity};
use crate::middleware::Filter;
use crate::problem::Problem;
use crate::request::route_of;
pub use crate::routes::Access;

/// Checks the authenticated caller (an [`Identity`] or an [`ApiClient`], inserted by the
/// credentials layer before it) against its route's [`Access`], read from the route's policies
/// the router recorded: a [`Filter`], no future of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckAccess;

impl Filter for CheckAccess {
    type State = ();

    fn on_request(&self, request: &mut Request) -> Result<(), Response> {
        refusal(request).map_or(Ok(()), Err)
    }
}

/// The answer refusing `request`, if its caller may not call its route.
fn refusal(request: &Request) -> Option<Response> {
    let Some(access) = route_of(request.extensions()).map(|route| &route.access) else {
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
