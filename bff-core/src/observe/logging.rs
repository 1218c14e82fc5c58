//! `tracing` set-up for `--log-format pretty|json`.
//!
//! Log lines are handed to a writer thread and written to stdout in batches: a request never
//! waits on a `write` system call, and under load one call carries many lines. If the writer
//! falls far behind (16k lines queued), new lines are dropped rather than slowing requests.

use std::io::BufWriter;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines queued for the writer before new ones are dropped. The queue is allocated up front, so
/// this is also its memory: about 32 bytes a line.
const MAX_QUEUED_LINES: usize = 16 * 1024;

/// Keeps the log writer thread alive; dropping it flushes what is queued.
#[derive(Debug)]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber; `RUST_LOG`, when given, wins over `filter`.
///
/// Calling it twice is harmless (the second call changes nothing), so tests may call it freely.
/// Keep the returned guard until the process exits.
pub fn init(format: LogFormat, filter: &str, rust_log: Option<&str>) -> LogGuard {
    let filter = EnvFilter::try_new(rust_log.unwrap_or(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(MAX_QUEUED_LINES)
        .thread_name("bff-log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
    LogGuard { _writer: installed.ok().map(|()| guard) }
}
