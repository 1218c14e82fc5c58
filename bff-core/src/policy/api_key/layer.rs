//! The middleware that requires a known API key and inserts the [`ApiClient`](super::ApiClient).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiKeys;
use crate::policy::auth::AuthError;

pub(crate) async fn require_api_key(State(keys): State<ApiKeys>, mut request: Request, next: Next) -> Response {
    let Some(key) = request.headers().get(keys.header()) else {
        return AuthError::MissingApiKey.into_response();
    };
    match keys.verify(key.as_bytes()) {
        Some(client) => {
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        None => AuthError::InvalidApiKey.into_response(),
    }
}
