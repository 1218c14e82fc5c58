//! A router that can be replaced while it serves: each request takes the router that is current
//! when it arrives and finishes on it, so a reload never cuts a request (or a download) short.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;

/// A router behind a swappable pointer; clones share it. Made from a [`Router`] with `into()`,
/// replaced with [`ReloadableRouter::replace`].
#[derive(Clone)]
pub struct ReloadableRouter(Arc<ArcSwap<Router>>);

impl ReloadableRouter {
    /// Serves `router` until it is replaced.
    pub fn new(router: Router) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(router)))
    }

    /// Serves `router` from the next request on; requests in flight finish on the previous one.
    pub fn replace(&self, router: Router) {
        self.0.store(Arc::new(router));
    }

    /// The router a request arriving now is served by.
    pub(crate) fn current(&self) -> Router {
        Router::clone(&self.0.load())
    }
}

impl From<Router> for ReloadableRouter {
    fn from(router: Router) -> Self {
        Self::new(router)
    }
}

impl fmt::Debug for ReloadableRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableRouter").finish_non_exhaustive()
    }
}
