//! The middleware that requires a valid bearer token and inserts the [`Identity`].

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AuthError, JwtVerifier};

fn bearer(request: &Request) -> Result<&str, AuthError> {
    let value = request.headers().get(AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".to_owned()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}

pub(crate) async fn require_jwt(State(verifier): State<JwtVerifier>, mut request: Request, next: Next) -> Response {
    let identity = match bearer(&request) {
        Ok(token) => verifier.verify(token).await,
        Err(e) => Err(e),
    };
    match identity {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}
