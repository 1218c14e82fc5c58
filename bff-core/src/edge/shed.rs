//! Load shedding: at most `server.max_in_flight_requests` requests are handled at once; one over
//! the cap is answered at once with `503 OVERLOADED` and `Retry-After`, so an overload degrades
//! into fast refusals instead of a queue that makes every request late. `/healthz` is never shed
//! (nor is anything on the admin listener, which this layer does not wrap).

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use metrics::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::BffError;
use crate::middleware::Filter;
use crate::observe::metrics::Metrics;

/// The path never shed: a load balancer's liveness check must see the process alive.
const HEALTH: &str = "/healthz";

/// Sheds requests over the cap (a [`Filter`]); see [the module docs](self).
#[derive(Clone)]
pub(crate) struct Shed {
    permits: Arc<Semaphore>,
    cap: usize,
    shed: Counter,
}

impl Shed {
    /// A cap of `cap` requests in flight, or `None` when `cap` is 0 (no cap).
    pub(crate) fn new(cap: usize, metrics: &Metrics) -> Option<Self> {
        (cap > 0).then(|| Self {
            permits: Arc::new(Semaphore::new(cap.min(Semaphore::MAX_PERMITS))),
            cap,
            shed: metrics.counter("bff_requests_shed_total", &[]),
        })
    }
}

impl Filter for Shed {
    /// The request's place, held until its response is ready (the state is dropped then); none
    /// for `/healthz`.
    type State = Option<OwnedSemaphorePermit>;

    fn on_request(&self, request: &mut Request) -> Result<Self::State, Response> {
        if request.uri().path() == HEALTH {
            return Ok(None);
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        self.shed.increment(1);
        let detail = format!("the gateway is at its limit of {} requests in flight", self.cap);
        Err(BffError::Unavailable { code: "OVERLOADED", detail }.into_response())
    }
}
