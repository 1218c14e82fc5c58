//! Work a request starts on behalf of others too, which must not end when that request does.

use std::future::Future;

use tracing::Instrument as _;

/// Runs `work` on a task of its own, in the current span, and waits for its result. Dropping the
/// returned future (a client that went away, a deadline) leaves `work` running to its end, so
/// what it stores for later requests is stored: a fetched key set, a session's rotated tokens.
/// `None` only when `work` panicked. Nothing starts until the future is first polled.
pub(crate) async fn finish<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Option<T> {
    tokio::spawn(work.in_current_span()).await.ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_work_goes_on_when_its_waiter_is_dropped() {
        let done = Arc::new(AtomicBool::new(false));
        let (started, mut started_rx) = tokio::sync::oneshot::channel();
        let work = {
            let done = done.clone();
            async move {
                let _ = started.send(());
                tokio::time::sleep(Duration::from_secs(1)).await;
                done.store(true, Ordering::SeqCst);
                7
            }
        };
        tokio::select! {
            _ = finish(work) => panic!("finished before its time"),
            _ = &mut started_rx => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(done.load(Ordering::SeqCst), "the work ran to its end with nobody waiting");
        assert_eq!(finish(async { 7 }).await, Some(7));
        assert_eq!(finish(async { panic!("a bug") }).await, None::<()>);
    }
}
