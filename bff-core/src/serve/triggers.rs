//! When to look at files again: every interval, and at once on SIGHUP (the operator's "reload
//! now"). Shared by the TLS certificate and the configuration reloads.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// The reasons to look again, one at a time.
pub(crate) struct Triggers {
    tick: tokio::time::Interval,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Triggers {
    /// Ticks every `interval`, and listens for SIGHUP from now on.
    pub(crate) fn new(interval: Duration) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            tick,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Waits for the next one: `true` for SIGHUP (reload whatever the files say), `false` for a
    /// tick (reload what changed).
    pub(crate) async fn next(&mut self) -> bool {
        #[cfg(unix)]
        let signalled = async {
            match self.hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = self.tick.tick() => false,
            _ = signalled => true,
        }
    }
}

/// A file's modification time and length, when it can be read: what changes when it is
/// rewritten.
pub(crate) type Stamp = Option<(SystemTime, u64)>;

/// `path`'s [`Stamp`].
pub(crate) fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len()))).ok()
}
