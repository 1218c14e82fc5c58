//! A log writer that batches lines in memory and writes them from one thread on a timer.
//!
//! A request's log line is one `memcpy` under a short lock: no system call, no thread wake-up.
//! The writer thread wakes every [`FLUSH_INTERVAL`], or early once [`FLUSH_AT`] bytes are waiting,
//! and writes everything waiting in one call (Envoy flushes its access logs the same way).
//! `tracing-appender`'s channel woke its thread for every line and spun in `sched_yield` while
//! idle: a `write`, several `sched_yield`s and a `futex` per request.
//!
//! If the sink stalls (stdout piped to a reader that stopped), lines past [`MAX_BUFFERED`] bytes
//! are dropped and counted rather than slowing requests or growing memory, and a line saying how
//! many were lost is written once the sink moves again.
//! Shutdown writes what is waiting, but waits at most 2 s for a stalled sink.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait before it is written.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Waiting bytes that wake the writer before the interval ends.
const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes past which new lines are dropped.
pub(crate) const MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// How long shutting down waits for the last lines to be written. A stdout nobody reads must not
/// keep the process from exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports lines that were dropped (the real one logs a warning, which lands in the next batch).
pub(crate) type DroppedNotice = fn(u64);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    /// Set by the guard: write what is left, then stop.
    closed: bool,
    /// Set by the writer thread as it stops.
    finished: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Tells the guard the writer thread has stopped.
    done: Condvar,
}

impl Default for Shared {
    fn default() -> Self {
        Self { pending: Mutex::new(Pending::default()), wake: Condvar::new(), done: Condvar::new() }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves only bytes behind: keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle `tracing` writes through; cheap to clone.
#[derive(Clone)]
pub(crate) struct BufferedWriter {
    shared: Arc<Shared>,
}

impl Write for BufferedWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.bytes.len() + line.len() > MAX_BUFFERED {
            pending.dropped += 1;
            return Ok(line.len());
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        let crossed = before < FLUSH_AT && pending.bytes.len() >= FLUSH_AT;
        drop(pending);
        if crossed {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Owns the writer thread: dropping it writes whatever is waiting and stops the thread.
pub(crate) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl std::fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushGuard").finish_non_exhaustive()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.wake.notify_one();
        let (pending, waited) = self
            .shared
            .done
            .wait_timeout_while(pending, self.drain_timeout, |p| !p.finished)
            .unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        // Joined only once it has finished; a writer stuck in `write` is left to the process exit.
        if !waited.timed_out()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread over `sink`.
pub(crate) fn spawn(
    sink: impl Write + Send + 'static,
    interval: Duration,
    notice: DroppedNotice,
) -> io::Result<(BufferedWriter, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new().name("bff-log-writer".into()).spawn({
        let shared = shared.clone();
        move || {
            run(&shared, sink, interval, notice);
            shared.lock().finished = true;
            shared.done.notify_all();
        }
    })?;
    let guard = FlushGuard { shared: shared.clone(), thread: Some(thread), drain_timeout: DRAIN_TIMEOUT };
    Ok((BufferedWriter { shared }, guard))
}

fn run(shared: &Shared, mut sink: impl Write, interval: Duration, notice: DroppedNotice) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut pending = shared.lock();
            if !pending.closed && pending.bytes.len() < FLUSH_AT {
                pending = shared.wake.wait_timeout(pending, interval).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            (std::mem::take(&mut pending.dropped), pending.closed)
        };
        // Write errors have nowhere to be reported but the log itself: the batch is let go.
        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
        }
        let _ = sink.flush();
        if dropped > 0 {
            notice(dropped);
        }
        // Keep a normal batch's memory for the next swap, but give back a burst's.
        batch.clear();
        if batch.capacity() > 4 * FLUSH_AT {
            batch = Vec::new();
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink tests can read back, and wait on.
    #[derive(Clone, Default)]
    struct Captured(Arc<(Mutex<Vec<u8>>, Condvar)>);

    impl Captured {
        fn bytes(&self) -> Vec<u8> {
            self.0.0.lock().unwrap().clone()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.0.lock().unwrap().extend_from_slice(buf);
            self.0.1.notify_all();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    static NOTICED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn notice(n: u64) {
        NOTICED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn every_line_is_written_by_the_time_the_guard_drops() {
        let sink = Captured::default();
        // An interval this long means only the guard's drop can have flushed the lines.
        let (mut writer, guard) = spawn(sink.clone(), Duration::from_secs(3600), notice).unwrap();
        for i in 0..1000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes()).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert_eq!(text.lines().last(), Some("line 999"));
    }

    #[test]
    fn a_full_flush_threshold_wakes_the_writer_before_the_interval() {
        let sink = Captured::default();
        let (mut writer, guard) = spawn(sink.clone(), Duration::from_secs(3600), notice).unwrap();
        let line = vec![b'x'; 1023];
        for _ in 0..(FLUSH_AT / 1024 + 1) {
            writer.write_all(&line).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        // The hour-long interval cannot fire: only the threshold can wake the writer. The wait is
        // for that event, bounded generously.
        let (written, woke) = &*sink.0;
        let (written, timeout) =
            woke.wait_timeout_while(written.lock().unwrap(), Duration::from_secs(60), |w| w.len() < FLUSH_AT).unwrap();
        assert!(!timeout.timed_out(), "the writer did not wake at {FLUSH_AT} bytes ({} written)", written.len());
        drop(written);
        drop(guard);
    }

    /// A sink whose `write` never returns, like a full pipe nobody reads.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            let never = Mutex::new(());
            let guard = never.lock().unwrap();
            let _unreachable = Condvar::new().wait_while(guard, |()| true);
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_does_not_hold_up_shutdown() {
        let (mut writer, mut guard) = spawn(Stuck, Duration::from_secs(3600), notice).unwrap();
        guard.drain_timeout = Duration::from_millis(50);
        writer.write_all(b"a line that will never be written\n").unwrap();
        // Dropped on another thread so that a regression fails the test instead of hanging it.
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = dropped.send(());
        });
        assert!(done.recv_timeout(Duration::from_secs(30)).is_ok(), "dropping the guard hung on a stuck sink");
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let sink = Captured::default();
        let shared = Arc::new(Shared::default());
        let mut writer = BufferedWriter { shared: shared.clone() };
        let line = vec![b'y'; 1024];
        let fits = MAX_BUFFERED / line.len();
        for _ in 0..fits + 5 {
            writer.write_all(&line).unwrap();
        }
        assert_eq!(shared.lock().bytes.len(), fits * line.len());
        assert_eq!(shared.lock().dropped, 5);
        shared.lock().closed = true;
        run(&shared, sink.clone(), Duration::from_secs(3600), notice);
        assert_eq!(sink.bytes().len(), fits * line.len());
        assert_eq!(NOTICED.load(std::sync::atomic::Ordering::Relaxed), 5);
        assert_eq!(shared.lock().dropped, 0);
    }
}
