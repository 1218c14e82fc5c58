//! `tracing` set-up for `--log-format pretty|json`.
//!
//! Log lines are batched in memory and written to stdout by one thread every 100 ms (sooner under
//! load): a request never waits on a `write` system call or wakes a thread, and under load one call
//! carries many lines. If stdout stalls, lines past 4 MiB waiting are dropped and counted rather
//! than slowing requests (see `log_buffer`).

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{self, FormatFields};
use tracing_subscriber::util::SubscriberInitExt;

use super::json_lines::{JsonLines, JsonSpanFields};
use super::log_buffer::{self, FlushGuard};
use crate::config::LogFormat;

/// Keeps the log writer thread alive; dropping it writes what is waiting.
#[derive(Debug)]
pub struct LogGuard {
    _writer: Option<FlushGuard>,
}

/// Installs the global subscriber; `RUST_LOG`, when given, wins over `filter`.
///
/// Calling it twice is harmless (the second call changes nothing), so tests may call it freely.
/// Keep the returned guard until the process exits.
pub fn init(format: LogFormat, filter: &str, rust_log: Option<&str>) -> LogGuard {
    let filter = EnvFilter::try_new(rust_log.unwrap_or(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    // The buffer hands over whole batches; a `BufWriter` in between would only copy them again.
    // Colours only for a person at a terminal: a file or a pipe gets plain text (and `NO_COLOR`
    // turns them off everywhere, https://no-color.org).
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match log_buffer::spawn(std::io::stdout(), log_buffer::FLUSH_INTERVAL, report_dropped) {
        Ok((writer, guard)) => {
            LogGuard { _writer: install(format, filter, colour, move || writer.clone()).then_some(guard) }
        }
        // No thread for the writer: log synchronously rather than not at all.
        Err(_) => {
            install(format, filter, colour, std::io::stdout);
            LogGuard { _writer: None }
        }
    }
}

/// Installs the global subscriber writing to `writer`; false if one was already installed.
fn install<W>(format: LogFormat, filter: EnvFilter, colour: bool, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // `try_init` also routes the `log` crate's records here.
    build(format, filter, colour, writer).try_init().is_ok()
}

/// The subscriber `init` installs, writing `format` lines to `writer`, without colours: for tests
/// that read the lines (`tracing::subscriber::with_default`).
#[cfg(any(test, feature = "test-util"))]
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    build(format, filter, false, writer)
}

fn build<W>(format: LogFormat, filter: EnvFilter, colour: bool, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Pretty => Box::new(builder.with_ansi(colour).fmt_fields(escaped_fields()).finish()),
        LogFormat::Json => Box::new(builder.fmt_fields(JsonSpanFields).event_format(JsonLines).finish()),
    }
}

/// The `pretty` format's fields, each value written with its control characters escaped
/// (`\n` as `\\n`): request-derived text (a decoded `%0a` in a path parameter, quoted in an
/// error) cannot start a log line of its own. The `json` format escapes them as JSON does.
pub(crate) fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write!(Escaping(writer), "{value:?}")
    })
    .delimited(" ")
}

/// Writes through, escaping control characters.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn report_dropped(dropped: u64) {
    tracing::warn!(dropped, "log lines dropped: stdout was not keeping up");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write!(Escaping(&mut out), "a\nb\r\u{1b}[31mc").unwrap();
        assert_eq!(out, "a\\nb\\r\\u{1b}[31mc");
    }
}
