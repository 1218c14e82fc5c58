//! Load shedding: at most `server.max_in_flight_requests` requests are handled at once; one over
//! the cap is answered at once with `503 OVERLOADED` and `Retry-After`, so an overload degrades
//! into fast refusals instead of a queue that makes every request late. `/healthz` is never shed
//! (nor is anything on the admin listener, which this layer does not wrap).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::Counter;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::error::BffError;
use crate::observe::metrics::Metrics;

/// What a shed request is told to wait before trying again, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// The path never shed: a load balancer's liveness check must see the process alive.
const HEALTH: &str = "/healthz";

/// Sheds requests over the cap; see [the module docs](self).
#[derive(Clone)]
pub(crate) struct ShedLayer {
    permits: Arc<Semaphore>,
    cap: usize,
    shed: Counter,
}

impl ShedLayer {
    /// A cap of `cap` requests in flight, or `None` when `cap` is 0 (no cap).
    pub(crate) fn new(cap: usize, metrics: &Metrics) -> Option<Self> {
        (cap > 0).then(|| Self {
            permits: Arc::new(Semaphore::new(cap.min(Semaphore::MAX_PERMITS))),
            cap,
            shed: metrics.counter("bff_requests_shed_total", &[]),
        })
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { layer: self.clone(), inner }
    }
}

/// The service of a [`ShedLayer`].
#[derive(Clone)]
pub(crate) struct Shed<S> {
    layer: ShedLayer,
    inner: S,
}

impl<S> Service<Request> for Shed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.uri().path() == HEALTH {
            return ShedFuture::Admitted { inner: self.inner.call(request), permit: None };
        }
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => ShedFuture::Admitted { inner: self.inner.call(request), permit: Some(permit) },
            Err(_) => {
                self.layer.shed.increment(1);
                let detail = format!("the gateway is at its limit of {} requests in flight", self.layer.cap);
                let mut response = BffError::Unavailable { code: "OVERLOADED", detail }.into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
                ShedFuture::Shed { response: Some(response) }
            }
        }
    }
}

pin_project! {
    /// A request let in (holding its place until its response is ready), or shed.
    #[project = ShedProj]
    pub(crate) enum ShedFuture<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { response: Option<Response> },
    }
}

impl<F> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProj::Admitted { inner, permit } => {
                let response = std::task::ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(response)
            }
            ShedProj::Shed { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
        }
    }
}
