//! Inbound policies: the traits the gateway's own policies are written with (the access check,
//! the credentials layers, rate limits, shaping), open to a BFF crate for its own.
//!
//! - A [`Guard`] is a synchronous check: a request passes (perhaps adjusted) or is answered at
//!   once. It costs no allocation.
//! - A [`Middleware`] is an async step around the rest of the stack: the request in, the
//!   response out. It gets the inner service itself and costs one boxed future a request (where
//!   axum's `from_fn` costs three allocations).
//!
//! Put one on a BFF's routes with [`Routes::guard`](crate::Routes::guard) or
//! [`Routes::middleware`](crate::Routes::middleware): it runs after the gateway's edge
//! (credentials, access, limits), so it can read the caller's [`Identity`](crate::Identity).
//!
//! ```
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::response::{IntoResponse, Response};
//! use bff_core::middleware::Guard;
//! use bff_core::{BffError, Identity};
//!
//! /// A caller may act on behalf of itself only: `X-On-Behalf-Of`, when sent, is its own id.
//! #[derive(Clone)]
//! struct OwnBehalf;
//!
//! impl Guard for OwnBehalf {
//!     fn refuse(&self, request: &mut Request) -> Option<Response> {
//!         let named = request.headers().get("x-on-behalf-of")?.as_bytes();
//!         let own = request.extensions().get::<Identity>().map(|id| id.subject().as_bytes());
//!         let detail = "X-On-Behalf-Of names another user";
//!         (own != Some(named)).then(|| BffError::rejected(StatusCode::FORBIDDEN, "NOT_YOUR_BEHALF", detail).into_response())
//!     }
//! }
//! ```
//!
//! `bff-core/examples/inbound_policy.rs` is a whole BFF with one.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

/// The inner service a [`Middleware`] calls: the rest of the stack, down to the handler.
pub trait Inner:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Send + 'static
{
}

impl<S> Inner for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Send + 'static
{
}

/// An async step around the rest of the stack: the request in, the response out.
///
/// ```
/// use std::future::Future;
///
/// use axum::extract::Request;
/// use axum::http::HeaderValue;
/// use axum::response::Response;
/// use bff_core::middleware::{Inner, Middleware, run};
///
/// /// Says which region answered.
/// #[derive(Clone)]
/// struct Region(HeaderValue);
///
/// impl Middleware for Region {
///     fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
///         let region = self.0.clone();
///         async move {
///             let mut response = run(inner, request).await;
///             response.headers_mut().insert("x-region", region);
///             response
///         }
///     }
/// }
/// ```
pub trait Middleware: Clone + Send + Sync + 'static {
    /// Handles `request`; `inner` (ready to be called once) runs the rest of the stack.
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static;
}

/// Calls `inner`, which is ready, with `request`: the rest of the stack, from a [`Middleware`].
pub async fn run<S: Inner>(mut inner: S, request: Request) -> Response {
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The [`Layer`] of a [`Middleware`], for an axum `Router` of one's own.
#[derive(Debug, Clone)]
pub struct MiddlewareLayer<M>(pub M);

impl<M: Clone, S> Layer<S> for MiddlewareLayer<M> {
    type Service = WithMiddleware<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithMiddleware { middleware: self.0.clone(), inner }
    }
}

/// A service behind a [`Middleware`].
#[derive(Debug, Clone)]
pub struct WithMiddleware<M, S> {
    middleware: M,
    inner: S,
}

impl<M, S> Service<Request> for WithMiddleware<M, S>
where
    M: Middleware,
    S: Inner + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone takes the place of the service that was made ready, which goes with the call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let response = self.middleware.call(request, ready);
        Box::pin(async move { Ok(response.await) })
    }
}

/// A synchronous check in front of the rest of the stack: a request passes (perhaps adjusted, as
/// the path normaliser does), or is answered at once with the guard's response. Its future is
/// `Either` of a ready answer and the inner one.
pub trait Guard: Clone + Send + Sync + 'static {
    /// The answer refusing `request`, or `None` to let it through.
    fn refuse(&self, request: &mut Request) -> Option<Response>;
}

/// The [`Layer`] of a [`Guard`], for an axum `Router` of one's own.
#[derive(Debug, Clone)]
pub struct GuardLayer<G>(pub G);

impl<G: Clone, S> Layer<S> for GuardLayer<G> {
    type Service = Guarded<G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded { guard: self.0.clone(), inner }
    }
}

/// A service behind a [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<G, S> {
    guard: G,
    inner: S,
}

impl<G, S> Service<Request> for Guarded<G, S>
where
    G: Guard,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.guard.refuse(&mut request) {
            Some(response) => Either::Left(ready(Ok(response))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    use tower::ServiceExt;

    use super::*;

    /// Refuses requests without `x-let-in`, tags the answers of the ones it lets through.
    #[derive(Clone)]
    struct Gate;

    impl Middleware for Gate {
        fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
            gate(request, inner)
        }
    }

    async fn gate<S: Inner>(request: Request, inner: S) -> Response {
        if !request.headers().contains_key("x-let-in") {
            return StatusCode::FORBIDDEN.into_response();
        }
        let mut response = run(inner, request).await;
        response.headers_mut().insert("x-gate", HeaderValue::from_static("passed"));
        response
    }

    #[tokio::test]
    async fn a_middleware_runs_around_the_inner_service_or_instead_of_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = tower::service_fn({
            let calls = calls.clone();
            move |_request: Request| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>("inner".into_response()) }
            }
        });
        let service = MiddlewareLayer(Gate).layer(inner);

        let refused = service.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        for expected_calls in 1..=2 {
            let request = Request::builder().header("x-let-in", "1").body(Body::empty()).unwrap();
            let passed = service.clone().oneshot(request).await.unwrap();
            assert_eq!(passed.status(), StatusCode::OK);
            assert_eq!(passed.headers()["x-gate"], "passed");
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        }
    }
}
