//! A retry policy: a call the upstream turned away without processing it is sent again.
//!
//! An HTTP/2 server refuses a stream (`REFUSED_STREAM`) when a burst of calls opens a connection
//! before its stream limit is known, and a server shutting down gracefully (`GOAWAY`) leaves the
//! streams past its last id unprocessed (RFC 9113 §8.7). Such a call did nothing upstream, so
//! sending it again is safe for any method.

use std::future::{Ready, ready};

use http::Response;
use tower::retry::{Policy, RetryLayer};

use super::outgoing::Outgoing;
use super::{Body, BoxError, UpstreamError};

/// How many times such a call is sent again.
const RESENDS: usize = 2;

/// The retry layer of this policy.
pub(crate) fn layer() -> RetryLayer<Unprocessed> {
    RetryLayer::new(Unprocessed { left: RESENDS })
}

/// Resends a call turned away unprocessed, [`RESENDS`] times at most.
#[derive(Debug, Clone)]
pub(crate) struct Unprocessed {
    left: usize,
}

impl Policy<Outgoing, Response<Body>, BoxError> for Unprocessed {
    type Future = Ready<()>;

    fn retry(&mut self, call: &mut Outgoing, result: &mut Result<Response<Body>, BoxError>) -> Option<Self::Future> {
        let unprocessed =
            matches!(result, Err(e) if e.downcast_ref::<UpstreamError>().is_some_and(UpstreamError::is_unprocessed));
        (unprocessed && self.left > 0).then(|| {
            self.left -= 1;
            call.resend("unprocessed");
            ready(())
        })
    }

    fn clone_request(&mut self, call: &Outgoing) -> Option<Outgoing> {
        call.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::{HeaderValue, Request};
    use tokio::time::Instant;

    use super::super::{Upstream, UpstreamErrorKind, UpstreamSettings};
    use super::*;
    use crate::config::UpstreamProtocol;
    use crate::observe::metrics::Metrics;

    /// An HTTP/2 upstream whose first `failures` attempts fail (unprocessed or not), counting attempts.
    fn flaky(failures: usize, unprocessed: bool) -> (Upstream, Arc<AtomicUsize>) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    let error = UpstreamError::new(Arc::from("flaky"), UpstreamErrorKind::Transport);
                    return Err(if unprocessed { error.unprocessed() } else { error });
                }
                Ok(Response::new(Body::from("{}")))
            }
        });
        let settings = UpstreamSettings { protocol: UpstreamProtocol::Http2, ..UpstreamSettings::bare() };
        (Upstream::from_service("flaky", settings, service, &Metrics::new()), attempts)
    }

    async fn post(upstream: &Upstream) -> Result<serde_json::Value, UpstreamError> {
        let call = upstream.post::<serde_json::Value>("/orders").json(&serde_json::json!({"user": 1}));
        call.send_within(HeaderValue::from_static("r"), Instant::now() + Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn calls_turned_away_unprocessed_are_resent_twice_at_most_whatever_the_method() {
        let (upstream, attempts) = flaky(2, true);
        assert!(post(&upstream).await.is_ok());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let (upstream, attempts) = flaky(3, true);
        assert!(post(&upstream).await.unwrap_err().is_unprocessed());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_call_the_upstream_may_have_processed_is_not_resent() {
        let (upstream, attempts) = flaky(1, false);
        assert_eq!(post(&upstream).await.unwrap_err().kind(), &UpstreamErrorKind::Transport);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_the_call_whatever_its_retries_and_the_per_try_timeout_each_attempt() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        // Each attempt is turned away unprocessed after 300 ms.
        let service = tower::service_fn(move |_: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err::<Response<Body>, _>(
                    UpstreamError::new(Arc::from("slow"), UpstreamErrorKind::Transport).unprocessed(),
                )
            }
        });
        let settings = UpstreamSettings { protocol: UpstreamProtocol::Http2, ..UpstreamSettings::bare() };
        let upstream = Upstream::from_service("slow", settings, service, &Metrics::new());
        let start = Instant::now();
        let call = upstream.get::<serde_json::Value>("/x");
        let error =
            call.send_within(HeaderValue::from_static("r"), start + Duration::from_millis(500)).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "the second attempt was cut off by the deadline");

        // With room, each attempt is bounded by the per-try timeout instead.
        let hang =
            tower::service_fn(|_: Request<Body>| std::future::pending::<Result<Response<Body>, UpstreamError>>());
        let settings = UpstreamSettings { timeout: Duration::from_millis(200), ..UpstreamSettings::bare() };
        let upstream = Upstream::from_service("hang", settings, hang, &Metrics::new());
        let start = Instant::now();
        let call = upstream.get::<serde_json::Value>("/x");
        let error = call.send_within(HeaderValue::from_static("r"), start + Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            (start.elapsed(), error.kind()),
            (Duration::from_millis(200), &UpstreamErrorKind::Timeout(Duration::from_millis(200)))
        );
    }
}
