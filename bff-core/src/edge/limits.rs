//! Request limits checked before anything else reads the request: a URI longer than
//! `server.max_uri_bytes` is a 414 problem. (The head and header count are hyper's, in
//! `serve`; the body, per route, is `extract::Json`'s.)

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::{Layer, Service};

use crate::error::BffError;

/// Refuses requests over the limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct LimitsLayer {
    pub(super) max_uri_bytes: usize,
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limits { max_uri_bytes: self.max_uri_bytes, inner }
    }
}

/// The service of [`LimitsLayer`].
#[derive(Debug, Clone)]
pub(super) struct Limits<S> {
    max_uri_bytes: usize,
    inner: S,
}

impl<S> Service<Request> for Limits<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if length > self.max_uri_bytes {
            let detail = format!("the URI is {length} bytes; the limit is {}", self.max_uri_bytes);
            let error = BffError::Rejected { status: StatusCode::URI_TOO_LONG, code: "URI_TOO_LONG", detail };
            return Either::Left(ready(Ok(error.into_response())));
        }
        Either::Right(self.inner.call(request))
    }
}
