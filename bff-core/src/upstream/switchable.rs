//! A test upstream shared by the resilience layers' tests: it answers after a latency, `200`
//! until told to fail, then `500`, and counts the calls that reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};

use super::{Body, BoxError};

/// The switch and the count of a [`switchable`] upstream.
#[derive(Clone, Default)]
pub(crate) struct Switch {
    pub(crate) failing: Arc<AtomicBool>,
    pub(crate) calls: Arc<AtomicUsize>,
}

impl Switch {
    pub(crate) fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// A service answering after `latency`, `500` while `switch` is failing, else `200`.
pub(crate) fn switchable(
    latency: Duration,
    switch: Switch,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Body>, BoxError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_: Request<Body>| {
        switch.calls.fetch_add(1, Ordering::SeqCst);
        let failed = switch.failing.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(latency).await;
            let mut response = Response::new(Body::from("{}"));
            if failed {
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok(response)
        }
    })
}
