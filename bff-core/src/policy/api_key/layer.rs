//! The middleware that requires a known API key and inserts the [`ApiClient`](super::ApiClient).

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::ApiKeys;
use crate::field;
use crate::middleware::{Inner, Middleware, run};
use crate::policy::auth::AuthError;
use crate::request::RequestMeta;

/// Requires a known API key; the handler gets its [`ApiClient`](super::ApiClient).
#[derive(Clone)]
pub(crate) struct RequireApiKey(pub(crate) ApiKeys);

impl Middleware for RequireApiKey {
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
        require_api_key(self.0.clone(), request, inner)
    }
}

async fn require_api_key<S: Inner>(keys: ApiKeys, mut request: Request, inner: S) -> Response {
    let key = match field::one(request.headers(), keys.header()) {
        Ok(Some(key)) => key,
        Ok(None) => return AuthError::MissingApiKey.into_response(),
        Err(_) => return AuthError::Ambiguous(keys.header().clone()).into_response(),
    };
    match keys.verify(key.as_bytes()) {
        Some(client) => {
            if let (Some(caller), Some(meta)) =
                (client.caller_headers(), request.extensions().get::<Arc<RequestMeta>>())
            {
                let _ = meta.caller.set(caller.clone());
            }
            request.extensions_mut().insert(client);
            run(inner, request).await
        }
        None => AuthError::InvalidApiKey.into_response(),
    }
}
