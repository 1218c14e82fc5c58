//! The bulkhead (`max_in_flight`): at most so many calls of an upstream in flight; a call over
//! the cap is refused at once (tower's `load_shed::error::Overloaded`, `UPSTREAM_OVERLOADED` to
//! the caller) and recorded as `shed` in its request's attempts.
//!
//! tower's `LoadShed` over its `ConcurrencyLimit`, with the refusal journaled: each call's clone
//! of the stack holds no permit until it is ready, and its future holds one until the exchange
//! ends.

use std::task::{Context, Poll};

use futures::future::Either;
use http::Response;
use tower::Service;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::error::Overloaded;

use super::journal::{JournalLayer, Short};
use super::outgoing::Outgoing;
use super::{Body, BoxError};

/// See [the module docs](self).
#[derive(Clone)]
pub(crate) struct Bulkhead<S> {
    inner: ConcurrencyLimit<S>,
    journal: JournalLayer,
    /// Whether the last `poll_ready` found a place.
    admitted: bool,
}

impl<S> Bulkhead<S> {
    pub(crate) fn new(inner: S, cap: usize, journal: JournalLayer) -> Self {
        Self { inner: ConcurrencyLimit::new(inner, cap), journal, admitted: false }
    }
}

impl<S> Service<Outgoing> for Bulkhead<S>
where
    S: Service<Outgoing, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Either<
        <ConcurrencyLimit<S> as Service<Outgoing>>::Future,
        std::future::Ready<Result<Response<Body>, BoxError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Never waits: a call with no place is refused when it is made.
        self.admitted = match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => false,
        };
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Outgoing) -> Self::Future {
        if std::mem::take(&mut self.admitted) {
            Either::Left(self.inner.call(request))
        } else {
            self.journal.short(&request, Short::Shed);
            Either::Right(std::future::ready(Err(Overloaded::new().into())))
        }
    }
}
