//! `tracing` set-up for `--log-format pretty|json`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG`, when given, wins over `filter`.
///
/// Calling it twice is harmless (the second call changes nothing), so tests may call it freely.
pub fn init(format: LogFormat, filter: &str, rust_log: Option<&str>) {
    let filter =
        EnvFilter::try_new(rust_log.unwrap_or(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
