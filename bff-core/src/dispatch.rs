//! Where a request finds its route, once, after the edge has normalised its path: a passthrough
//! route of the config (host, then path, then method: `proxy/table.rs`), else a handler route of
//! the BFF. The route's policies ([`Route`]: its pattern, access, deadline, body limit, shaping)
//! are attached to the request context there, and every later layer reads them from it: the
//! access log and metrics, credentials and access, rate limits, the handler's [`Ctx`](crate::Ctx).
//!
//! Handler routes are then served by axum's router, which matches the path again to run the
//! handler with its extractors (`Path`): the same `matchit` table, so the same pattern.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures::future::Either;
use tower::Service;

use crate::proxy::{Proxies, Routed};
use crate::request::RequestMeta;
use crate::routes::{App, AppFuture, Route};

/// The passthrough routes, with the stacks of their public and protected ones: each route's
/// credentials, access and limits, then the forwarding.
#[derive(Clone)]
pub(crate) struct Proxied {
    pub(crate) proxies: Proxies,
    pub(crate) public: App,
    pub(crate) protected: App,
}

/// Finds each request's route, attaches its policies, and hands it to the route's service.
#[derive(Clone)]
pub(crate) struct Dispatch {
    handlers: Arc<matchit::Router<Arc<Route>>>,
    proxied: Option<Proxied>,
    router: Router,
}

impl Dispatch {
    /// Routes to `router`'s handlers, whose policies are `handlers` (by pattern), and to the
    /// passthrough routes of `proxied`.
    pub(crate) fn new<'a>(
        handlers: impl IntoIterator<Item = &'a Arc<Route>>,
        proxied: Option<Proxied>,
        router: Router,
    ) -> Self {
        let mut table = matchit::Router::new();
        for route in handlers {
            // The router took these patterns already: a repeat is a route declared twice, for
            // other methods, with the same access (`Gateway::router` checks).
            let _ = table.insert(&*route.pattern, route.clone());
        }
        Self { handlers: Arc::new(table), proxied, router }
    }
}

type Answer = Ready<Result<Response, Infallible>>;

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Either<Answer, AppFuture>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and each proxy stack is made ready as it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(proxied) = &mut self.proxied {
            match proxied.proxies.route(&mut request) {
                Routed::Route(policy) => {
                    let stack = match policy.access.is_public() {
                        true => &mut proxied.public,
                        false => &mut proxied.protected,
                    };
                    attach(&request, policy);
                    return Either::Left(Either::Right(stack.call_in_place(request)));
                }
                Routed::Answered(response, policy) => {
                    attach(&request, policy);
                    return Either::Left(Either::Left(ready(Ok(response))));
                }
                Routed::Elsewhere => {}
            }
        }
        if let Ok(found) = self.handlers.at(request.uri().path()) {
            attach(&request, found.value.clone());
        }
        Either::Right(self.router.call(request))
    }
}

/// Records the route's policies in the request context the edge made.
fn attach(request: &Request, policy: Arc<Route>) {
    if let Some(meta) = request.extensions().get::<Arc<RequestMeta>>() {
        let _ = meta.policy.set(policy);
    }
}
