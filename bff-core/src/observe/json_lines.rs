//! `--log-format json`: one JSON object per line.
//!
//! The shape is tracing-subscriber's flattened JSON (`timestamp`, `level`, the event's fields,
//! `target`, and the current `span` with its fields and `name`), but made without its detours:
//! tracing-subscriber keeps span fields as JSON text and parses them back into a
//! `serde_json::Value` for every event, a tree of allocations per access-log line. Here span fields
//! are kept as the inside of a JSON object and copied in as they are.
//!
//! A line is written whole into this thread's own string, then handed to tracing-subscriber's
//! writer in one piece: its many small parts (a member is five) are appended to a `String` the
//! compiler sees, rather than each passed through the writer's `dyn fmt::Write`. Numbers are
//! written by `itoa` and `ryu`, as serde_json writes them.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::thread::LocalKey;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonLines;

/// Formats span fields as the members of a JSON object (`"a":1,"b":"x"`), so that fields
/// recorded later append with a comma and events copy them in without parsing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonSpanFields;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        with_buffer(&LINE, |line| format_line(ctx, line, event).and_then(|()| writer.write_str(line)))
    }
}

/// `event`'s line, in `ctx`'s current span, into `out`.
fn format_line<S, N>(ctx: &FmtContext<'_, S, N>, out: &mut String, event: &Event<'_>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    out.push_str("{\"timestamp\":\"");
    timestamp(out, std::time::SystemTime::now())?;
    out.push_str("\",\"level\":\"");
    out.push_str(meta.level().as_str());
    out.push('"');
    let mut members = Members { out, first: false, result: Ok(()) };
    event.record(&mut members);
    members.result?;
    out.push_str(",\"target\":");
    json_str(out, meta.target());
    if let Some(span) = ctx.lookup_current() {
        out.push_str(",\"span\":{");
        if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
            && !fields.is_empty()
        {
            out.push_str(fields);
            out.push(',');
        }
        out.push_str("\"name\":");
        json_str(out, span.name());
        out.push('}');
    }
    out.push_str("}\n");
    Ok(())
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // Written whole into this thread's scratch buffer, then copied once: the span's own
        // string is allocated at its size rather than grown a few bytes at a time.
        with_buffer(&SCRATCH, |scratch| {
            let mut members = Members { out: scratch, first: true, result: Ok(()) };
            fields.record(&mut members);
            members.result.and_then(|()| writer.write_str(scratch))
        })
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut members = Members { out: &mut current.fields, first, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }
}

/// Writes each recorded field as a JSON member, `,"name":value`.
struct Members<'a> {
    out: &'a mut String,
    /// Whether the next member is the first (no comma before it).
    first: bool,
    /// A field's `Debug` or `Display` may fail; nothing else can.
    result: fmt::Result,
}

impl Members<'_> {
    /// `,"name":`, then the value `write` appends.
    fn member(&mut self, field: &Field, write: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let out = &mut *self.out;
        out.push_str(if self.first { "\"" } else { ",\"" });
        self.first = false;
        escape_into(out, field.name());
        out.push_str("\":");
        self.result = write(out);
    }
}

impl Visit for Members<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            if value.is_finite() {
                out.push_str(ryu::Buffer::new().format_finite(value));
            } else {
                out.push('"');
                write!(out, "{value}")?;
                out.push('"');
            }
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| {
            out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| {
            out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| {
            json_str(out, value);
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.push('"');
            write!(Escaped(&mut *out), "{value:?}")?;
            out.push('"');
            Ok(())
        });
    }
}

/// The most a thread keeps of its scratch buffer between spans, and of its line between lines.
const MAX_SCRATCH: usize = 4096;

/// Runs `write` on this thread's `buffer`, emptied, and keeps the buffer for the next time unless
/// it grew past [`MAX_SCRATCH`]. A buffer in use further up this thread's stack (tracing keeps a
/// field's `Debug` from reaching the subscriber, so only a direct caller could) gives way to a
/// string of its own.
fn with_buffer<R>(buffer: &'static LocalKey<RefCell<String>>, write: impl FnOnce(&mut String) -> R) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let written = write(&mut buffer);
            if buffer.capacity() > MAX_SCRATCH {
                *buffer = String::new();
            }
            written
        }
        Err(_) => write(&mut String::new()),
    })
}

thread_local! {
    /// Where a span's fields are written before they are copied into the span.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };

    /// Where a line is written before it is handed to the writer.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };

    /// The second last written by this thread, and its `YYYY-MM-DDTHH:MM:SS`: lines come many
    /// to a second, and the date is worked out once for all of them.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-04T21:30:05.123456Z`), as
/// tracing-subscriber writes it.
fn timestamp(writer: &mut impl fmt::Write, now: std::time::SystemTime) -> fmt::Result {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let date = SECOND.with(|cached| match cached.get() {
        (second, date) if second == seconds => date,
        _ => {
            let date = date_time(seconds);
            cached.set((seconds, date));
            date
        }
    });
    let mut fraction = *b".000000Z";
    let mut micros = since.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // Both are ASCII digits and separators.
    writer.write_str(std::str::from_utf8(&date).unwrap_or_default())?;
    writer.write_str(std::str::from_utf8(&fraction).unwrap_or_default())
}

/// `YYYY-MM-DDTHH:MM:SS` of `seconds` since the epoch (years past 9999 are not written).
fn date_time(seconds: u64) -> [u8; 19] {
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), from 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = (year_of_era + era * 400 + u64::from(month <= 2)).min(9999);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, second_of_day / 3600);
    put(14, 2, second_of_day / 60 % 60);
    put(17, 2, second_of_day % 60);
    out
}

/// `value` as a JSON string, quotes included.
fn json_str(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string.
fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut clean = 0;
    while let Some(at) = next_escape(bytes, clean) {
        // Every byte that needs escaping is ASCII, so `at` is a char boundary.
        out.push_str(&s[clean..at]);
        match bytes[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            byte => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        clean = at + 1;
    }
    out.push_str(&s[clean..]);
}

/// Escapes what passes through for the inside of a JSON string: for values written by their
/// `Debug` or `Display`.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// The first byte of `bytes` at or after `from` that a JSON string needs escaped: eight bytes at
/// a time while none of them does (most text needs none), then byte by byte.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(word) = bytes.get(at..at + 8).and_then(|c| <[u8; 8]>::try_from(c).ok())
        && !needs_escape(u64::from_le_bytes(word))
    {
        at += 8;
    }
    let rest = bytes.get(at..)?;
    rest.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').map(|found| at + found)
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte below 0x20 borrows in `word - 0x20…` and had its high bit clear.
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    (control | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))) != 0
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<Value> {
        let sink = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let sink = sink.clone();
                move || sink.clone()
            })
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    }

    /// The same events through tracing-subscriber's own JSON format (serde_json's numbers and
    /// escapes), flattened as ours are: every line reads back the same, but for its timestamp.
    #[test]
    fn lines_read_back_as_tracing_subscribers_own_json_lines() {
        let emit = || {
            let span = tracing::info_span!("request", id = "r-3", n = 7u64, path = "/q\"x\"\u{1}");
            let _entered = span.enter();
            let floats = [0.0, -0.0, 0.1, 3.0, 1e21, 1e-7, 123_456.789, -2.5e-300, f64::MAX, f64::MIN_POSITIVE];
            for value in floats {
                tracing::info!(value, big = u64::MAX, small = i64::MIN, zero = 0u64, yes = true, no = false,
                    text = "t\u{1f}\\", shown = %"d\"\t", debugged = ?"e", "m {}", 1);
            }
            tracing::warn!(status = 503u16, "only a message");
        };
        let sink = Captured::default();
        let theirs = tracing_subscriber::fmt()
            .with_writer({
                let sink = sink.clone();
                move || sink.clone()
            })
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(theirs, emit);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let theirs: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let ours = lines(emit);
        assert_eq!(ours.len(), 11);
        assert_eq!(ours.len(), theirs.len());
        for (mut ours, mut theirs) in ours.into_iter().zip(theirs) {
            ours.as_object_mut().unwrap().remove("timestamp");
            theirs.as_object_mut().unwrap().remove("timestamp");
            assert_eq!(ours, theirs);
        }
    }

    /// A field whose `Debug` logs while the span's fields are written into the scratch buffer:
    /// tracing drops what is logged from inside the subscriber, and the span keeps its fields.
    #[test]
    fn a_field_that_logs_while_it_is_written_leaves_the_span_whole() {
        struct Logs;
        impl fmt::Debug for Logs {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let inner = tracing::info_span!("inner", x = "in");
                let _entered = inner.enter();
                tracing::info!("from inside");
                f.write_str("outer value")
            }
        }
        let lines = lines(|| {
            let span = tracing::info_span!("outer", v = ?Logs, w = "after");
            let _entered = span.enter();
            tracing::info!("served");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["span"], json!({"v": "outer value", "w": "after", "name": "outer"}));
    }

    #[test]
    fn events_in_a_span_are_one_json_object_per_line() {
        let lines = lines(|| {
            let span = tracing::info_span!("request", id = "r-1", method = %"GET", path = "/a \"quoted\"\npath");
            let _entered = span.enter();
            tracing::info!(status = 200u16, latency_ms = 1.5, ok = true, delta = -3i64, "request served");
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request served");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            json!({"id": "r-1", "method": "GET", "path": "/a \"quoted\"\npath", "name": "request"})
        );
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(timestamp.len() >= 20 && timestamp.ends_with('Z'), "{timestamp}");
    }

    proptest::proptest! {
        #[test]
        fn timestamps_are_rfc3339_with_microseconds(seconds in 0u64..253_402_300_800, micros in 0u32..1_000_000) {
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, micros * 1000 + 999);
            let mut written = String::new();
            timestamp(&mut written, at).unwrap();
            proptest::prop_assert_eq!(written, humantime::format_rfc3339_micros(at).to_string());
        }
    }

    #[test]
    fn timestamps_of_one_second_share_its_date_and_not_the_next_ones() {
        for (seconds, expected) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_796_419_805, "2026-12-04T21:30:05"),
            (1_796_419_806, "2026-12-04T21:30:06"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            let mut written = String::new();
            timestamp(&mut written, std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).unwrap();
            assert_eq!(written, format!("{expected}.000000Z"));
        }
    }

    #[test]
    fn every_byte_that_needs_it_is_escaped_wherever_it_sits_in_a_word() {
        use std::fmt::Write as _;
        let specials: Vec<char> =
            (0u8..0x20).map(char::from).chain(['"', '\\', '\u{7f}', 'é', '✓', ' ', '~']).collect();
        for length in 1..20 {
            for at in 0..length {
                for special in &specials {
                    let text: String = (0..length).map(|i| if i == at { *special } else { 'a' }).collect();
                    let mut out = String::new();
                    write!(Escaped(&mut out), "{text}").unwrap();
                    let back: String =
                        serde_json::from_str(&format!("\"{out}\"")).unwrap_or_else(|e| panic!("{out:?}: {e}"));
                    assert_eq!(back, text);
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_and_odd_numbers_stay_valid_json() {
        let tricky = "tab\there, bell\u{7}, backslash \\, unicode é✓, cr\r";
        let lines = lines(|| {
            tracing::warn!(error = %tricky, nan = f64::NAN, inf = f64::INFINITY, "refused: {}", "\"why\"");
        });
        let line = &lines[0];
        assert_eq!(line["error"], tricky);
        assert_eq!(line["message"], "refused: \"why\"");
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["inf"], "inf");
        assert!(line.get("span").is_none());
    }

    #[test]
    fn fields_recorded_later_join_the_span() {
        let lines = lines(|| {
            let span = tracing::info_span!("request", id = "r-2", user = tracing::field::Empty);
            span.record("user", "u-42");
            let _entered = span.enter();
            tracing::info!("inside");
            let empty = tracing::info_span!("bare", later = tracing::field::Empty);
            let _inner = empty.enter();
            tracing::info!("nested, nothing recorded");
            empty.record("later", 7);
            tracing::info!("nested, recorded");
        });
        assert_eq!(lines[0]["span"], json!({"id": "r-2", "user": "u-42", "name": "request"}));
        assert_eq!(lines[1]["span"], json!({"name": "bare"}));
        assert_eq!(lines[2]["span"], json!({"later": 7, "name": "bare"}));
    }
}
