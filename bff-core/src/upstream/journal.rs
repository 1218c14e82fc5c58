//! Each upstream attempt, recorded when its response head (or its failure) arrives: in the
//! request's access log line, as `users:200:3,orders:500:12,orders:200:4` (upstream, status or
//! why there was none — `timeout`, `connect`, `error` —, ms to the head), and in
//! `bff_upstream_attempt_duration_seconds{upstream, outcome}` (`2xx`, `3xx`, `4xx`, `5xx`, or
//! the failure).
//!
//! Bounded: the first [`MAX_ATTEMPTS`] are kept and the rest counted (`+N more`), whatever a
//! fan-out sends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use metrics::Histogram;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::stack::CallContext;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind};
use crate::observe::metrics::Metrics;

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

/// Records each attempt of an upstream's calls in its request's [`Attempts`] and the attempt
/// histogram.
#[derive(Debug, Clone)]
pub(crate) struct JournalLayer {
    upstream: Arc<str>,
    durations: Arc<Durations>,
}

/// An upstream's attempt histograms, by outcome, registered once.
struct Durations([Histogram; OUTCOMES.len()]);

impl fmt::Debug for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Durations")
    }
}

/// The `outcome` labels of the attempt histogram.
const OUTCOMES: [&str; 8] = ["1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "connect", "error"];

impl JournalLayer {
    pub(crate) fn new(upstream: &Arc<str>, registry: &Metrics) -> Self {
        let durations = OUTCOMES.map(|outcome| {
            let labels = [("upstream", upstream.to_string()), ("outcome", outcome.to_owned())];
            registry.histogram("bff_upstream_attempt_duration_seconds", &labels)
        });
        Self { upstream: upstream.clone(), durations: Arc::new(Durations(durations)) }
    }
}

impl<S> Layer<S> for JournalLayer {
    type Service = Journal<S>;

    fn layer(&self, inner: S) -> Journal<S> {
        Journal { inner, upstream: self.upstream.clone(), durations: self.durations.clone() }
    }
}

/// The service of [`JournalLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Journal<S> {
    inner: S,
    upstream: Arc<str>,
    durations: Arc<Durations>,
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
        let entry = Entry { attempts, upstream: self.upstream.clone(), durations: self.durations.clone() };
        Journaled { inner: self.inner.call(request), entry: Some((entry, Instant::now())) }
    }
}

pin_project! {
    /// An attempt, recorded when its response head (or its failure) arrives.
    pub(crate) struct Journaled<F> {
        #[pin]
        inner: F,
        entry: Option<(Entry, Instant)>,
    }
}

/// Where an attempt is recorded.
struct Entry {
    attempts: Option<Arc<dyn AttemptLog>>,
    upstream: Arc<str>,
    durations: Arc<Durations>,
}

impl<F> Future for Journaled<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some((entry, start)) = this.entry.take() {
            let (outcome, label) = match &result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (Outcome::Status(status), usize::from(status / 100).clamp(1, 5) - 1)
                }
                Err(error) => {
                    let why = failure(error);
                    (Outcome::Failed(why), OUTCOMES.iter().position(|o| *o == why).unwrap_or(OUTCOMES.len() - 1))
                }
            };
            let elapsed = start.elapsed();
            entry.durations.0[label].record(elapsed.as_secs_f64());
            if let Some(attempts) = entry.attempts {
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                attempts.attempts().record(&entry.upstream, outcome, ms);
            }
        }
        Poll::Ready(result)
    }
}

/// Why an attempt had no answer: `timeout`, `connect`, else `error` (in the log line, a broken
/// exchange is told apart as `transport`).
fn failure(error: &BoxError) -> &'static str {
    match error.downcast_ref::<UpstreamError>().map(UpstreamError::kind) {
        Some(UpstreamErrorKind::Timeout(_)) => "timeout",
        Some(UpstreamErrorKind::Connect) => "connect",
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
