//! The upstream attempts of one request, for its access log line: each attempt's upstream, its
//! status (or why it had none: `timeout`, `connect`, `transport`, `error`) and its time to the
//! response head, as `users:200:3,orders:500:12,orders:200:4`.
//!
//! Bounded: the first [`MAX_ATTEMPTS`] are kept and the rest counted (`+N more`), whatever a
//! fan-out sends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::stack::CallContext;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};

/// The most attempts one request's log line lists.
pub(crate) const MAX_ATTEMPTS: usize = 16;

/// Where a request keeps its attempts: the request context (`RequestMeta`), reached by its calls
/// through their [`CallContext`] without an allocation of its own.
pub(crate) trait AttemptLog: Send + Sync + fmt::Debug {
    fn attempts(&self) -> &Attempts;
}

/// One request's attempts.
#[derive(Debug, Default)]
pub(crate) struct Attempts(Mutex<Listed>);

#[derive(Debug, Default)]
struct Listed {
    attempts: Vec<Attempt>,
    more: usize,
}

#[derive(Debug)]
struct Attempt {
    upstream: Arc<str>,
    outcome: Outcome,
    ms: u64,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Status(u16),
    Failed(&'static str),
}

impl Attempts {
    fn record(&self, upstream: &Arc<str>, outcome: Outcome, ms: u64) {
        let mut listed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if listed.attempts.len() < MAX_ATTEMPTS {
            listed.attempts.push(Attempt { upstream: upstream.clone(), outcome, ms });
        } else {
            listed.more += 1;
        }
    }

    /// Whether no attempt was made.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).attempts.is_empty()
    }
}

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, attempt) in listed.attempts.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            match attempt.outcome {
                Outcome::Status(status) => write!(f, "{separator}{}:{status}:{}", attempt.upstream, attempt.ms)?,
                Outcome::Failed(why) => write!(f, "{separator}{}:{why}:{}", attempt.upstream, attempt.ms)?,
            }
        }
        if listed.more > 0 {
            write!(f, ",+{} more", listed.more)?;
        }
        Ok(())
    }
}

/// Records each attempt of an upstream's calls in its request's [`Attempts`].
#[derive(Debug, Clone)]
pub(crate) struct JournalLayer(pub(crate) Arc<str>);

impl<S> Layer<S> for JournalLayer {
    type Service = Journal<S>;

    fn layer(&self, inner: S) -> Journal<S> {
        Journal { inner, upstream: self.0.clone() }
    }
}

/// The service of [`JournalLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Journal<S> {
    inner: S,
    upstream: Arc<str>,
}

impl<S> Service<Request<Body>> for Journal<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Journaled<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let attempts = request.extensions().get::<CallContext>().and_then(|c| c.attempts.clone());
        let entry = attempts.map(|attempts| (attempts, self.upstream.clone(), Instant::now()));
        Journaled { inner: self.inner.call(request), entry }
    }
}

pin_project! {
    /// An attempt, recorded when its response head (or its failure) arrives.
    pub(crate) struct Journaled<F> {
        #[pin]
        inner: F,
        entry: Option<(Arc<dyn AttemptLog>, Arc<str>, Instant)>,
    }
}

impl<F> Future for Journaled<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some((attempts, upstream, start)) = this.entry.take() {
            let outcome = match &result {
                Ok(response) => Outcome::Status(response.status().as_u16()),
                Err(error) => Outcome::Failed(failure(error)),
            };
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            attempts.attempts().record(&upstream, outcome, ms);
        }
        Poll::Ready(result)
    }
}

fn failure(error: &BoxError) -> &'static str {
    match error.downcast_ref::<UpstreamError>().map(UpstreamError::kind) {
        Some(UpstreamErrorKind::Timeout(_)) => "timeout",
        Some(UpstreamErrorKind::Connect) => "connect",
        Some(UpstreamErrorKind::Transport) => "transport",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_listed_in_order_and_bounded() {
        let attempts = Attempts::default();
        assert!(attempts.is_empty());
        let (users, orders): (Arc<str>, Arc<str>) = (Arc::from("users"), Arc::from("orders"));
        attempts.record(&users, Outcome::Status(200), 3);
        attempts.record(&orders, Outcome::Failed("timeout"), 250);
        attempts.record(&orders, Outcome::Status(200), 4);
        assert_eq!(attempts.to_string(), "users:200:3,orders:timeout:250,orders:200:4");
        for _ in 0..20 {
            attempts.record(&users, Outcome::Status(200), 1);
        }
        let line = attempts.to_string();
        assert_eq!(line.split(',').count(), MAX_ATTEMPTS + 1, "{line}");
        assert!(line.ends_with(",+7 more"), "{line}");
    }
}
