//! The middleware that requires a valid bearer token and inserts the [`Identity`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};

use super::{AuthError, JwtVerifier};
use crate::field;
use crate::middleware::{Inner, Middleware, run};
use crate::request::RequestMeta;

fn bearer(request: &Request) -> Result<&str, AuthError> {
    let value = field::one(request.headers(), AUTHORIZATION)
        .map_err(|_| AuthError::Ambiguous(AUTHORIZATION))?
        .ok_or(AuthError::MissingToken)?;
    // A word at a time (`to_str` looks at each byte): a token is hundreds of bytes, and a header
    // value holds no control character but a tab, so ASCII is what `to_str` would accept.
    let value = Some(value.as_bytes())
        .filter(|bytes| bytes.is_ascii())
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or_else(|| AuthError::Malformed("the Authorization header is not ASCII".to_owned()))?;
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_bearer_token_is_read_only_from_an_ascii_authorization_header() {
        let request = |value: &[u8]| {
            Request::builder().header(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap()).body(Body::empty()).unwrap()
        };
        assert_eq!(bearer(&request(b"Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer(&request(b"bearer \tabc ")).unwrap(), "abc");
        for not_ascii in [&b"Bearer ab\xc3\xa9"[..], b"Bearer \xff", b"B\x80arer abc"] {
            assert!(matches!(bearer(&request(not_ascii)), Err(AuthError::Malformed(_))), "{not_ascii:?}");
        }
        for missing in [&b"Basic abc"[..], b"Bearer ", b"Bearer", b"Bearer\tabc"] {
            assert!(matches!(bearer(&request(missing)), Err(AuthError::MissingToken)), "{missing:?}");
        }
    }
}
