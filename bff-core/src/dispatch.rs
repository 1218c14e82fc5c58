//! Where a request finds its route, once, after the edge has normalised its path: a passthrough
//! route of the config (host, then path, then method: `proxy/table.rs`), else a handler route of
//! the BFF. The route's policies ([`Route`]: its pattern, access, deadline, body limit, shaping)
//! are attached to the request context there, and every later layer reads them from it: the
//! access log and metrics, credentials and access, rate limits, the handler's [`Ctx`](crate::Ctx).
//!
//! The route's access then picks the stack it goes through: the protected routes' (credentials,
//! access, limits, shaping) or the public routes' (limits by address), one of each around the
//! forwarding and one of each around the handlers. Handler routes are then served by axum's
//! router, which matches the path again to run the handler with its extractors (`Path`): the same
//! `matchit` table, so the same pattern. A method the route has no handler for goes straight to
//! the router, which answers `405` with `Allow` whoever asks, as it does a path with no route.
//! The router's refusals in plain text or with no body, and its handlers', are made problem
//! documents around it (`edge/problem.rs`), on either path.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use futures::future::Either;
use tower::Service;

use crate::edge::ProblemRouter;
use crate::proxy::{Proxies, Routed};
use crate::request::RequestMeta;
use crate::routes::{Access, App, AppFuture, Route};

/// The stacks of one kind of route (the handlers, the passthrough routes), each around the
/// routes' service: the public routes' (their limits by address) and the protected routes'
/// (credentials, access, limits, shaping).
#[derive(Clone)]
pub(crate) struct Stacks {
    public: App,
    protected: App,
}

impl Stacks {
    pub(crate) fn new(public: App, protected: App) -> Self {
        Self { public, protected }
    }

    /// The stack a route with `access` goes through.
    fn of(&mut self, access: &Access) -> &mut App {
        match access.is_public() {
            true => &mut self.public,
            false => &mut self.protected,
        }
    }
}

/// The passthrough routes, with their stacks around the forwarding.
#[derive(Clone)]
pub(crate) struct Proxied {
    pub(crate) proxies: Proxies,
    pub(crate) stacks: Stacks,
}

/// A handler route: its policies, and the methods it has handlers for.
struct Handled {
    policy: Arc<Route>,
    methods: Box<[Method]>,
}

/// Finds each request's route, attaches its policies, and hands it to the route's stack.
#[derive(Clone)]
pub(crate) struct Dispatch {
    handlers: Arc<matchit::Router<Handled>>,
    /// The handler routes' stacks around the router; none when no route needs one (the admin
    /// endpoints).
    stacks: Option<Stacks>,
    proxied: Option<Proxied>,
    router: ProblemRouter,
}

impl Dispatch {
    /// Routes to `router`'s handlers through `stacks`, their policies and methods being
    /// `handlers` (by pattern), and to the passthrough routes of `proxied`.
    pub(crate) fn new(
        handlers: impl IntoIterator<Item = (Arc<Route>, Box<[Method]>)>,
        stacks: Option<Stacks>,
        proxied: Option<Proxied>,
        router: ProblemRouter,
    ) -> Self {
        let mut table = matchit::Router::new();
        for (policy, methods) in handlers {
            // The router took these patterns already: a repeat is a route declared twice, for
            // other methods, with the same access (`Gateway::router` checks).
            let _ = table.insert(policy.pattern.to_string(), Handled { policy, methods });
        }
        Self { handlers: Arc::new(table), stacks, proxied, router }
    }
}

type Answer = Ready<Result<Response, Infallible>>;

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Either<Answer, AppFuture>, <ProblemRouter as Service<Request>>::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and each proxy stack is made ready as it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(proxied) = &mut self.proxied {
            match proxied.proxies.route(&mut request) {
                Routed::Route(policy) => {
                    let stack = proxied.stacks.of(&policy.access);
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
            let Handled { policy, methods } = found.value;
            attach(&request, policy.clone());
            if let Some(stacks) = self.stacks.as_mut().filter(|_| methods.contains(request.method())) {
                return Either::Left(Either::Right(stacks.of(&policy.access).call_in_place(request)));
            }
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
