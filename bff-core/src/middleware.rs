//! The gateway's own middleware, as tower layers without axum `from_fn`'s per-request boxing.
//!
//! `from_fn` re-boxes the inner service into a `BoxCloneSyncService` on every request and boxes
//! the inner call's future again: three allocations per layer per request. A [`Middleware`] gets
//! the inner service itself, so each layer costs one boxed future; a [`Guard`], which only lets a
//! request through or answers it at once, costs none.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

/// The inner service a middleware calls: the rest of the stack, down to the handler.
pub(crate) trait Inner:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Send + 'static
{
}

impl<S> Inner for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Send + 'static
{
}

/// An async step around the rest of the stack: the request in, the response out.
pub(crate) trait Middleware: Clone + Send + Sync + 'static {
    /// Handles `request`; `inner` (ready to be called once) runs the rest of the stack.
    fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static;
}

/// Calls `inner`, which is ready, with `request`.
pub(crate) async fn run<S: Inner>(mut inner: S, request: Request) -> Response {
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The [`Layer`] of a [`Middleware`].
#[derive(Debug, Clone)]
pub(crate) struct MiddlewareLayer<M>(pub(crate) M);

impl<M: Clone, S> Layer<S> for MiddlewareLayer<M> {
    type Service = WithMiddleware<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithMiddleware { middleware: self.0.clone(), inner }
    }
}

/// A service behind a [`Middleware`].
#[derive(Debug, Clone)]
pub(crate) struct WithMiddleware<M, S> {
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
pub(crate) trait Guard: Clone + Send + Sync + 'static {
    /// The answer refusing `request`, or `None` to let it through.
    fn refuse(&self, request: &mut Request) -> Option<Response>;
}

/// The [`Layer`] of a [`Guard`].
#[derive(Debug, Clone)]
pub(crate) struct GuardLayer<G>(pub(crate) G);

impl<G: Clone, S> Layer<S> for GuardLayer<G> {
    type Service = Guarded<G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded { guard: self.0.clone(), inner }
    }
}

/// A service behind a [`Guard`].
#[derive(Debug, Clone)]
pub(crate) struct Guarded<G, S> {
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
