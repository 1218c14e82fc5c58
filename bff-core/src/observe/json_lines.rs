//! `--log-format json`: one JSON object per line, written straight into the line buffer.
//!
//! The shape is tracing-subscriber's flattened JSON (`timestamp`, `level`, the event's fields,
//! `target`, and the current `span` with its fields and `name`), but made without its detours:
//! tracing-subscriber keeps span fields as JSON text and parses them back into a
//! `serde_json::Value` for every event, a tree of allocations per access-log line. Here span fields
//! are kept as the inside of a JSON object and copied in as they are.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
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
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut members = Members { writer: &mut writer, first: false, result: Ok(()) };
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        json_str(&mut writer, meta.target())?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                writer.write_str(fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            json_str(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut members = Members { writer: &mut writer, first, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }
}

/// Writes each recorded field as a JSON member, `,"name":value`.
struct Members<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// Whether the next member is the first (no comma before it).
    first: bool,
    result: fmt::Result,
}

impl Members<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let writer = &mut *self.writer;
        let comma = if self.first { "" } else { "," };
        self.first = false;
        self.result = writer
            .write_str(comma)
            .and_then(|()| json_str(writer, field.name()))
            .and_then(|()| writer.write_char(':'))
            .and_then(|()| value(writer));
    }
}

impl Visit for Members<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, |w| write!(w, "{value}"));
        } else {
            self.member(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `value` as a JSON string, quotes included.
fn json_str(writer: &mut impl fmt::Write, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(&mut *writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what passes through for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut clean = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Eight bytes at a time while none of them needs escaping: most text needs none.
            if let Some(chunk) = bytes.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok())
                && !needs_escape(u64::from_le_bytes(chunk))
            {
                i += 8;
                continue;
            }
            let byte = bytes[i];
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => {
                    i += 1;
                    continue;
                }
            };
            // Every byte matched above is ASCII, so `i` is a char boundary.
            self.0.write_str(&s[clean..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            i += 1;
            clean = i;
        }
        self.0.write_str(&s[clean..])
    }
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
