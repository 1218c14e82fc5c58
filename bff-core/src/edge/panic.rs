//! A panicking handler is our bug: a 500 problem, its message kept for the log only, and the
//! connection and server live on.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::CatchUnwind;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::BffError;

/// Catches a panic of the rest of the stack, in `call` or while polling.
#[derive(Debug, Clone, Copy)]
pub(super) struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic(inner)
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub(super) struct CatchPanic<S>(S);

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = PanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.call(request))) {
            Ok(future) => PanicFuture { inner: Some(AssertUnwindSafe(future).catch_unwind()), early: None },
            Err(panic) => PanicFuture { inner: None, early: Some(internal_error(panic)) },
        }
    }
}

pin_project! {
    /// The response future of [`CatchPanic`].
    pub(super) struct PanicFuture<F> {
        #[pin]
        inner: Option<CatchUnwind<AssertUnwindSafe<F>>>,
        early: Option<Response>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for PanicFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(response) = this.early.take() {
            return Poll::Ready(Ok(response));
        }
        match this.inner.as_pin_mut().map(|inner| inner.poll(cx)) {
            Some(Poll::Ready(Ok(result))) => Poll::Ready(result),
            Some(Poll::Ready(Err(panic))) => Poll::Ready(Ok(internal_error(panic))),
            Some(Poll::Pending) | None => Poll::Pending,
        }
    }
}

/// The response for a caught panic; the access log writes the message (via the error report).
fn internal_error(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_owned());
    BffError::Internal(format!("handler panicked: {message}").into()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::problem::ErrorReport;

    /// Panics in `call`, before any future exists.
    #[derive(Clone)]
    struct PanicsInCall;

    impl Service<Request> for PanicsInCall {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request) -> Self::Future {
            panic!("in call")
        }
    }

    #[tokio::test]
    async fn panics_in_call_and_in_poll_are_500_problems() {
        let in_call = CatchPanicLayer.layer(PanicsInCall).oneshot(Request::new(Body::empty())).await.unwrap();
        let in_poll = CatchPanicLayer
            .layer(tower::service_fn(|_: Request| async { panic!("in poll") }))
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        for (response, message) in [(in_call, "in call"), (in_poll, "in poll")] {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let report = response.extensions().get::<ErrorReport>().unwrap();
            assert!(report.message.contains(message), "{}", report.message);
        }
    }
}
