//! The outbound stack of one upstream: its layers and their order, written down once.
//!
//! Outermost first, every call passes through:
//!
//! 1. **deadline** (`upstream/timeout.rs`): no call outlives its request's deadline,
//!    retries and waits included.
//! 2. *(resilience slots, outermost first: coalescing, cache, circuit breaker, retry with a
//!    budget, balance over instances with ejection, bulkhead.)* Today one retry policy sits
//!    here: a call an HTTP/2 upstream turned away unprocessed is sent again
//!    (`upstream/unprocessed.rs`).
//! 3. **call headers** (`upstream/headers.rs`): the request id (later identity and trace
//!    context) from the call's context.
//! 4. **per-try timeout** (`upstream/timeout.rs`): one attempt, its body included, takes at
//!    most the upstream's `timeout`.
//! 5. **HTTP client** (`upstream/transport.rs`): hyper-util's pooled client; reads the
//!    body whole under a limit unless the call asked for a stream.
//!
//! Each layer is a tower [`Layer`](tower::Layer) over `http::Request<Body>` /
//! `http::Response<Body>` with [`BoxError`] errors, so tower's own (`retry`, `limit`,
//! `load_shed`, `balance`) stack in the slots as they are.

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use super::headers::set_call_headers;
use super::timeout::{Deadline, PerTry, TimeBoundLayer};
use super::{Body, BoxError, UpstreamSettings, unprocessed};
use crate::config::UpstreamProtocol;

/// An upstream's whole outbound stack, type-erased: cheap to clone, one clone per call.
pub type Outbound = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// What a call carries through the stack as a request extension: set by the call, read by the
/// layers that need it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The request id, sent as `X-Request-Id`.
    pub request_id: HeaderValue,
    /// The request deadline; no call outlives it.
    pub deadline: Instant,
    /// Whether the caller reads the body as a stream (else the client reads it whole).
    pub streamed: bool,
}

/// Builds the stack of [the module docs](self) over `client`, the innermost service.
pub(crate) fn build<S>(name: &Arc<str>, settings: &UpstreamSettings, client: S) -> Outbound
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    // Over HTTP/1.1 nothing is turned away unprocessed in a way worth resending (hyper already
    // resends a call that never left on a closed pooled connection), so the retry and the
    // request copy it needs are left out there.
    let resend = (settings.protocol != UpstreamProtocol::Http1).then(unprocessed::layer);
    let stack = ServiceBuilder::new()
        .layer(TimeBoundLayer::new(name.clone(), Deadline))
        .option_layer(resend)
        .map_request(set_call_headers)
        .layer(TimeBoundLayer::new(name.clone(), PerTry(settings.timeout)))
        .service(client);
    BoxCloneSyncService::new(stack)
}
