//! The credential step of a protected route when the BFF has sessions: a bearer token when the
//! request has one (non-browser clients, as without sessions), else the session cookie.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use futures::future::Either;

use super::{Sessions, cookie};
use crate::middleware::{Inner, Middleware, run};
use crate::policy::auth::layer::RequireJwt;
use crate::policy::auth::{AuthError, Identity};
use crate::request::RequestMeta;
use crate::websocket::Opening;

/// A bearer token (verified as [`RequireJwt`] does) or the session cookie, with its CSRF checks.
#[derive(Clone)]
pub(crate) struct RequireSession {
    pub(crate) bearer: Option<RequireJwt>,
    pub(crate) sessions: Sessions,
}

impl Middleware for RequireSession {
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        match &self.bearer {
            Some(bearer) if request.headers().contains_key(AUTHORIZATION) => Either::Left(bearer.call(request, inner)),
            _ => Either::Right(self.sessions.clone().with_cookie(request, inner)),
        }
    }
}

impl Sessions {
    async fn with_cookie<S: Inner>(self, mut request: Request, inner: S) -> Response {
        let websocket = Opening::of(request.method(), request.version(), request.headers(), request.extensions());
        match self.authenticate(request.headers(), request.uri(), websocket.is_some()).await {
            Ok((identity, token)) => {
                insert(&mut request, identity);
                request.extensions_mut().insert(token);
                run(inner, request).await
            }
            Err(e) => refusal(e),
        }
    }
}

/// Makes `identity` the request's: the handler's extractor and the upstream calls' headers.
fn insert(request: &mut Request, identity: Identity) {
    if let (Some(caller), Some(meta)) = (identity.caller_headers(), request.extensions().get::<Arc<RequestMeta>>()) {
        let _ = meta.caller.set(caller.clone());
    }
    request.extensions_mut().insert(identity);
}

/// The answer to a refused cookie: an ended session's cookie is cleared as well.
pub(crate) fn refusal(error: AuthError) -> Response {
    let ended = error == AuthError::SessionEnded;
    let mut response = error.into_response();
    if ended {
        response.headers_mut().append(SET_COOKIE, cookie::clear(cookie::SESSION));
    }
    response
}
