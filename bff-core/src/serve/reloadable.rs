//! An app that can be replaced while it serves: each request takes the app that is current when
//! it arrives and finishes on it, so a reload never cuts a request (or a download) short.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::routes::App;

/// An [`App`] behind a swappable pointer; clones share it. Made from an `App` (or an axum
/// `Router`) with `into()`, replaced with [`ReloadableApp::replace`].
#[derive(Clone)]
pub struct ReloadableApp(Arc<ArcSwap<App>>);

impl ReloadableApp {
    /// Serves `app` until it is replaced.
    pub fn new(app: impl Into<App>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(app.into())))
    }

    /// Serves `app` from the next request on; requests in flight finish on the previous one.
    pub fn replace(&self, app: impl Into<App>) {
        self.0.store(Arc::new(app.into()));
    }

    /// The app a request arriving now is served by.
    pub(crate) fn current(&self) -> Arc<App> {
        self.0.load_full()
    }
}

impl<T: Into<App>> From<T> for ReloadableApp {
    fn from(app: T) -> Self {
        Self::new(app)
    }
}

impl fmt::Debug for ReloadableApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableApp").finish_non_exhaustive()
    }
}
