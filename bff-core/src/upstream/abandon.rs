//! Calls abandoned mid-flight: a sibling required part failed, or the client went away.
//!
//! Over HTTP/1.1 an exchange cannot be cancelled without closing its connection, so dropping it
//! costs a new connection later; under a required upstream's outage every request would drop its
//! calls to the healthy upstreams and open new connections to them. Instead an abandoned exchange
//! finishes in the background, bounded by its own per-try timeout (capped at the request's
//! deadline), and its connection goes back to the pool. At most [`MAX_FINISHING`] per upstream
//! finish at once; past that one is dropped, so an outage cannot pile them up. Over HTTP/2 a
//! dropped exchange is a cancelled stream on a connection that stays: it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use http::Response;
use metrics::Counter;

use super::{Body, BoxError};
use crate::config::UpstreamProtocol;
use crate::observe::metrics::Metrics;

/// The most abandoned exchanges of one upstream finishing in the background at once.
pub(crate) const MAX_FINISHING: usize = 256;

/// An exchange in the outbound stack, as a call holds it.
pub(crate) type Exchange = BoxFuture<'static, Result<Response<Body>, BoxError>>;

/// What one upstream does with its abandoned exchanges.
pub(crate) struct Abandoned {
    /// Whether to let them finish (HTTP/1.1 connections) rather than drop them.
    finish: bool,
    finishing: Arc<AtomicUsize>,
    finished: Counter,
    dropped: Counter,
}

impl Abandoned {
    pub(crate) fn new(name: &str, protocol: UpstreamProtocol, registry: &Metrics) -> Self {
        let counter = |outcome: &'static str| {
            let labels = [("upstream", name.to_owned()), ("outcome", outcome.to_owned())];
            registry.counter("bff_upstream_abandoned_total", &labels)
        };
        Self {
            finish: protocol != UpstreamProtocol::Http2,
            finishing: Arc::default(),
            finished: counter("finished"),
            dropped: counter("dropped"),
        }
    }

    /// Takes an exchange its call no longer waits for.
    pub(crate) fn take(&self, exchange: Exchange) {
        let runtime = tokio::runtime::Handle::try_current();
        let (true, Ok(runtime)) = (self.finish, runtime) else {
            self.dropped.increment(1);
            return;
        };
        if self.finishing.fetch_add(1, Ordering::AcqRel) >= MAX_FINISHING {
            self.finishing.fetch_sub(1, Ordering::AcqRel);
            self.dropped.increment(1);
            return;
        }
        self.finished.increment(1);
        let finishing = self.finishing.clone();
        runtime.spawn(async move {
            // Its answer is nobody's; only its connection matters.
            let _ = exchange.await;
            finishing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// How many are finishing now.
    #[cfg(test)]
    pub(crate) fn finishing(&self) -> usize {
        self.finishing.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    fn waiting(gate: &Arc<Semaphore>) -> Exchange {
        let gate = gate.clone();
        Box::pin(async move {
            let _permit = gate.acquire().await;
            Err::<Response<Body>, BoxError>("answered".into())
        })
    }

    #[tokio::test]
    async fn at_most_so_many_finish_at_once_the_rest_are_dropped() {
        let metrics = Metrics::new();
        let abandoned = Abandoned::new("orders", UpstreamProtocol::Http1, &metrics);
        let gate = Arc::new(Semaphore::new(0));
        for _ in 0..MAX_FINISHING + 3 {
            abandoned.take(waiting(&gate));
        }
        assert_eq!(abandoned.finishing(), MAX_FINISHING);
        let text = metrics.render();
        assert!(text.contains(r#"bff_upstream_abandoned_total{upstream="orders",outcome="dropped"} 3"#), "{text}");
        gate.add_permits(MAX_FINISHING);
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            while abandoned.finishing() > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert!(done.await.is_ok(), "{} still finishing", abandoned.finishing());
        // Over HTTP/2 an abandoned exchange is a cancelled stream: dropped, never finished.
        let h2 = Abandoned::new("users", UpstreamProtocol::Http2, &metrics);
        h2.take(waiting(&gate));
        assert_eq!(h2.finishing(), 0);
    }
}
