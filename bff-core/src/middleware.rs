//! Inbound policies: the two traits every policy of the gateway's own is written with (the edge
//! layers, credentials, access, rate limits, shaping), open to a BFF crate for its own.
//!
//! - A [`Filter`] is synchronous: it sees the request on the way in and either lets it through
//!   (perhaps adjusted) or answers it at once, and may see the response on the way out, with a
//!   state it kept from the way in. It costs no allocation: its future is a concrete type and the
//!   inner service is called in place. This is the shape of Envoy's and Pingora's HTTP filters.
//!   A pair of filters is a filter, and so is an `Option` of one: `(a, (b, c))` is `a` around `b`
//!   around `c` in one layer, which is how the gateway's edge runs its filters.
//! - A [`Middleware`] is an async step around the rest of the stack, for a policy that must wait
//!   on something of its own (a JWKS refresh, a Redis round trip): the request in, the response
//!   out. It gets the inner service itself and costs one boxed future a request (where axum's
//!   `from_fn` costs three allocations).
//!
//! Put one on a BFF's routes with [`Routes::filter`](crate::Routes::filter) or
//! [`Routes::middleware`](crate::Routes::middleware): it runs after the gateway's edge
//! (credentials, access, limits), so it can read the caller's [`Identity`](crate::Identity).
//!
//! ```
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::response::{IntoResponse, Response};
//! use bff_core::middleware::Filter;
//! use bff_core::{BffError, Identity};
//!
//! /// A caller may act on behalf of itself only: `X-On-Behalf-Of`, when sent, is its own id.
//! #[derive(Clone)]
//! struct OwnBehalf;
//!
//! impl Filter for OwnBehalf {
//!     type State = ();
//!
//!     fn on_request(&self, request: &mut Request) -> Result<(), Response> {
//!         let Some(named) = request.headers().get("x-on-behalf-of") else { return Ok(()) };
//!         let own = request.extensions().get::<Identity>().map(|id| id.subject().as_bytes());
//!         if own == Some(named.as_bytes()) {
//!             return Ok(());
//!         }
//!         let detail = "X-On-Behalf-Of names another user";
//!         Err(BffError::rejected(StatusCode::FORBIDDEN, "NOT_YOUR_BEHALF", detail).into_response())
//!     }
//! }
//! ```
//!
//! `bff-core/examples/inbound_policy.rs` is a whole BFF with one.
//!
//! Two layers of the edge are plain tower services instead, because they must be inside every
//! poll of the futures within them: the request span (entered on each poll) and the panic
//! catcher (which wraps each poll in `catch_unwind`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures::FutureExt;
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
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
///
/// The future is the inner service's own, mapped: it does not hold `inner` or `request` beside it.
pub fn run<S: Inner>(mut inner: S, request: Request) -> impl Future<Output = Response> + Send + 'static {
    FutureExt::map(inner.call(request), |answered| match answered {
        Ok(response) => response,
        Err(never) => match never {},
    })
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
        // Mapped rather than awaited in an `async` block, which would hold the middleware's
        // future twice (as the block's capture and as what it awaits): twice the box.
        Box::pin(FutureExt::map(self.middleware.call(request, ready), Ok))
    }
}

/// A synchronous step in front of the rest of the stack: [`on_request`](Filter::on_request) lets a
/// request through, perhaps adjusted, keeping a [`State`](Filter::State) for the way out, or
/// answers it at once; [`on_response`](Filter::on_response) then sees the inner answer. See [the
/// module docs](self) for an example.
pub trait Filter: Clone + Send + Sync + 'static {
    /// What `on_request` keeps for `on_response`: `()` for a filter that only checks.
    type State: Send + 'static;

    /// Runs on the way in: `Ok` lets the request through, `Err` is the answer, given at once
    /// (the inner service is not called and [`on_response`](Filter::on_response) does not run).
    #[expect(clippy::result_large_err, reason = "the refusal is the answer, moved out once; a box would allocate")]
    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response>;

    /// Runs on the way out, on the answer of the rest of the stack. Does nothing by default.
    fn on_response(state: Self::State, response: &mut Response) {
        let _ = (state, response);
    }
}

/// Two filters as one, `self.0` around `self.1`: they answer as two [`FilterLayer`]s one around
/// the other would (the outer sees the inner's refusal on its way out), with one future and one
/// move of the request, where two layers make two of each.
impl<A: Filter, B: Filter> Filter for (A, B) {
    type State = (A::State, B::State);

    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
        let outer = self.0.on_request(request)?;
        match self.1.on_request(request) {
            Ok(inner) => Ok((outer, inner)),
            Err(mut refusal) => {
                A::on_response(outer, &mut refusal);
                Err(refusal)
            }
        }
    }

    fn on_response((outer, inner): Self::State, response: &mut Response) {
        B::on_response(inner, response);
        A::on_response(outer, response);
    }
}

/// The filter when there is one (a policy switched on by config); else nothing to do.
impl<F: Filter> Filter for Option<F> {
    type State = Option<F::State>;

    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
        match self {
            Some(filter) => filter.on_request(request).map(Some),
            None => Ok(None),
        }
    }

    fn on_response(state: Self::State, response: &mut Response) {
        if let Some(state) = state {
            F::on_response(state, response);
        }
    }
}

/// The [`Layer`] of a [`Filter`], for an axum `Router` of one's own.
#[derive(Debug, Clone)]
pub struct FilterLayer<F>(pub F);

impl<F: Clone, S> Layer<S> for FilterLayer<F> {
    type Service = Filtered<F, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Filtered { filter: self.0.clone(), inner }
    }
}

/// A service behind a [`Filter`].
#[derive(Debug, Clone)]
pub struct Filtered<F, S> {
    filter: F,
    inner: S,
}

impl<F, S> Service<Request> for Filtered<F, S>
where
    F: Filter,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FilterFuture<F, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let step = match self.filter.on_request(&mut request) {
            Ok(state) => Step::Passed { inner: self.inner.call(request), state: Some(state) },
            Err(response) => Step::Refused { response: Some(response) },
        };
        FilterFuture { step }
    }
}

pin_project! {
    /// The response future of a [`Filtered`] service: the filter's answer, or the inner one
    /// seen by [`Filter::on_response`].
    pub struct FilterFuture<F: Filter, Fut> {
        #[pin]
        step: Step<F::State, Fut>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<State, Fut> {
        Refused { response: Option<Response> },
        Passed { #[pin] inner: Fut, state: Option<State> },
    }
}

impl<F, Fut> Future for FilterFuture<F, Fut>
where
    F: Filter,
    Fut: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().step.project() {
            StepProj::Refused { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
            StepProj::Passed { inner, state } => {
                let Ok(mut response) = std::task::ready!(inner.poll(cx));
                if let Some(state) = state.take() {
                    F::on_response(state, &mut response);
                }
                Poll::Ready(Ok(response))
            }
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

    /// Copies a request header onto the response; refuses a request that sends `x-refuse`.
    #[derive(Clone)]
    struct Echo;

    impl Filter for Echo {
        type State = Option<HeaderValue>;

        fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
            if request.headers().contains_key("x-refuse") {
                return Err(StatusCode::FORBIDDEN.into_response());
            }
            Ok(request.headers().get("x-in").cloned())
        }

        fn on_response(state: Self::State, response: &mut Response) {
            if let Some(value) = state {
                response.headers_mut().insert("x-out", value);
            }
        }
    }

    /// An inner service answering `200 inner`, and the count of its calls.
    fn counted_inner() -> (
        impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = tower::service_fn({
            let calls = calls.clone();
            move |_request: Request| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>("inner".into_response()) }
            }
        });
        (inner, calls)
    }

    #[tokio::test]
    async fn a_filter_sees_the_request_and_the_response_or_answers_instead() {
        let (inner, calls) = counted_inner();
        let service = FilterLayer(Echo).layer(inner);

        let request = Request::builder().header("x-in", "7").body(Body::empty()).unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-out"], "7");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let request = Request::builder().header("x-in", "7").header("x-refuse", "1").body(Body::empty()).unwrap();
        let refused = service.oneshot(request).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(!refused.headers().contains_key("x-out"), "on_response ran on the filter's own answer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Marks its name on the request's `x-trail` on the way in and on the response's on the way
    /// out; refuses a request whose `x-refuse` names it.
    #[derive(Clone)]
    struct Mark(&'static str);

    impl Filter for Mark {
        type State = &'static str;

        fn on_request(&self, request: &mut Request) -> Result<&'static str, Response> {
            request.headers_mut().append("x-trail", HeaderValue::from_static(self.0));
            if request.headers().get("x-refuse").is_some_and(|named| named == self.0) {
                return Err(StatusCode::FORBIDDEN.into_response());
            }
            Ok(self.0)
        }

        fn on_response(name: &'static str, response: &mut Response) {
            response.headers_mut().append("x-trail", HeaderValue::from_static(name));
        }
    }

    #[tokio::test]
    async fn filters_in_a_tuple_answer_as_the_same_filters_layered() {
        // The handler answers with the trail the request reached it with.
        let handler = tower::service_fn(|request: Request| async move {
            let trail: Vec<&str> =
                request.headers().get_all("x-trail").iter().map(|v| v.to_str().unwrap_or("?")).collect();
            Ok::<_, Infallible>(trail.join(",").into_response())
        });
        let layered = tower::ServiceBuilder::new()
            .layer(FilterLayer(Mark("a")))
            .option_layer(None::<FilterLayer<Mark>>)
            .layer(FilterLayer(Some(Mark("b"))))
            .layer(FilterLayer(Mark("c")))
            .service(handler);
        let tupled = FilterLayer((Mark("a"), (None::<Mark>, (Some(Mark("b")), Mark("c"))))).layer(handler);
        async fn answer(
            service: impl Service<Request, Response = Response, Error = Infallible>,
            refuse: &str,
        ) -> String {
            let request = Request::builder().header("x-refuse", refuse).body(Body::empty()).unwrap();
            let response = service.oneshot(request).await.unwrap();
            let out: Vec<_> =
                response.headers().get_all("x-trail").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
            format!("{status} in:{} out:{}", String::from_utf8_lossy(&body), out.join(","))
        }
        for refuse in ["none", "a", "b", "c"] {
            assert_eq!(answer(tupled.clone(), refuse).await, answer(layered.clone(), refuse).await, "{refuse}");
        }
        assert_eq!(answer(tupled.clone(), "none").await, "200 OK in:a,b,c out:c,b,a");
        // Refused by `b`: `c` never ran, and `a` saw the refusal on its way out.
        assert_eq!(answer(tupled, "b").await, "403 Forbidden in: out:a");
    }

    #[tokio::test]
    async fn a_middleware_runs_around_the_inner_service_or_instead_of_it() {
        let (inner, calls) = counted_inner();
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

    /// A middleware whose future carries 4 KiB of its own.
    #[derive(Clone)]
    struct Heavy;

    impl Middleware for Heavy {
        fn call<S: Inner>(&self, request: Request, inner: S) -> impl Future<Output = Response> + Send + 'static {
            let ballast = [1_u8; 4096];
            async move {
                let response = run(inner, request).await;
                std::hint::black_box(&ballast);
                response
            }
        }
    }

    #[tokio::test]
    async fn a_middlewares_future_is_boxed_once_and_run_holds_only_the_inner_future() {
        let own = std::mem::size_of_val(&Heavy.call(Request::new(Body::empty()), counted_inner().0));
        assert!(own >= 4096);
        let mut service = MiddlewareLayer(Heavy).layer(counted_inner().0);
        let boxed = service.ready().await.unwrap().call(Request::new(Body::empty()));
        let size = std::mem::size_of_val(&*boxed);
        assert!(size < own + 64, "a middleware future of {own} bytes is boxed in {size}");
        assert_eq!(boxed.await.unwrap().status(), StatusCode::OK);

        // Neither the request nor the inner service is kept once the inner service is called.
        let (mut inner, _) = counted_inner();
        let inner_future = std::mem::size_of_val(&inner.call(Request::new(Body::empty())));
        let ran = run(counted_inner().0, Request::new(Body::empty()));
        assert!(std::mem::size_of_val(&ran) <= inner_future + 8, "run's future holds more than the inner future");
        assert!(std::mem::size_of_val(&ran) < std::mem::size_of::<Request>());
    }
}
