//! The middleware that requires a valid bearer token and inserts the [`Identity`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};

use super::{AuthError, JwtVerifier};
use crate::middleware::{Inner, Middleware, run};
use crate::request::RequestMeta;

fn bearer(request: &Request) -> Result<&str, AuthError> {
    let value = request.headers().get(AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".to_owned()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}

/// Requires a valid bearer token; the handler gets its [`Identity`](super::Identity).
#[derive(Clone)]
pub(crate) struct RequireJwt(pub(crate) JwtVerifier);

impl Middleware for RequireJwt {
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        require_jwt(self.0.clone(), request, inner)
    }
}

async fn require_jwt<S: Inner>(verifier: JwtVerifier, mut request: Request, inner: S) -> Response {
    let request_id = request.extensions().get::<Arc<RequestMeta>>().map(|meta| meta.id.clone());
    let identity = match bearer(&request) {
        Ok(token) => verifier.verify_for(token, request_id.as_ref()).await,
        Err(e) => Err(e),
    };
    match identity {
        Ok(identity) => {
            // The request context reads the caller's headers; the handler, the identity.
            if let (Some(caller), Some(meta)) =
                (identity.caller_headers(), request.extensions().get::<Arc<RequestMeta>>())
            {
                let _ = meta.caller.set(caller.clone());
            }
            request.extensions_mut().insert(identity);
            run(inner, request).await
        }
        Err(e) => e.into_response(),
    }
}
