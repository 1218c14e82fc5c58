//! A layer that acts before the inner call and on its response, with nothing to await of its own:
//! the shape of most edge layers. Its future is a concrete type (no box), and the inner service is
//! called in place (not cloned per request), as tower-http's layers do.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// What an [`AroundLayer`] does: `before` sees the request and keeps what `after` needs.
pub(crate) trait Around: Clone + Send + Sync + 'static {
    /// Carried from `before` to `after`.
    type State: Send + 'static;

    /// Runs on the way in.
    fn before(&self, request: &mut Request) -> Self::State;

    /// Runs on the way out.
    fn after(state: Self::State, response: &mut Response);
}

/// The layer of an [`Around`].
#[derive(Debug, Clone)]
pub(crate) struct AroundLayer<A>(pub(crate) A);

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService { around: self.0.clone(), inner }
    }
}

/// The service of an [`AroundLayer`].
#[derive(Debug, Clone)]
pub(crate) struct AroundService<A, S> {
    around: A,
    inner: S,
}

impl<A, S> Service<Request> for AroundService<A, S>
where
    A: Around,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let state = self.around.before(&mut request);
        AroundFuture { inner: self.inner.call(request), state: Some(state) }
    }
}

pin_project! {
    /// The response future of an [`AroundService`].
    pub(crate) struct AroundFuture<A: Around, F> {
        #[pin]
        inner: F,
        state: Option<A::State>,
    }
}

impl<A, F> Future for AroundFuture<A, F>
where
    A: Around,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(never)) => match never {},
            Poll::Ready(Ok(mut response)) => {
                if let Some(state) = this.state.take() {
                    A::after(state, &mut response);
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::HeaderValue;
    use tower::ServiceExt;

    use super::*;

    /// Copies a request header onto the response.
    #[derive(Clone)]
    struct Echo;

    impl Around for Echo {
        type State = Option<HeaderValue>;

        fn before(&self, request: &mut Request) -> Self::State {
            request.headers().get("x-in").cloned()
        }

        fn after(state: Self::State, response: &mut Response) {
            if let Some(value) = state {
                response.headers_mut().insert("x-out", value);
            }
        }
    }

    #[tokio::test]
    async fn before_sees_the_request_and_after_the_response() {
        let inner = tower::service_fn(|_: Request| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
        let service = AroundLayer(Echo).layer(inner);
        let request = Request::builder().header("x-in", "7").body(Body::empty()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-out"], "7");
    }
}
