//! The OpenMetrics exposition of a registry, for a scraper that asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does), with **exemplars**: each bucket of the
//! request and attempt duration histograms carries the trace and span of the latest sampled
//! observation that fell in it, so a slow bucket on a dashboard links to a trace.
//!
//! The Prometheus text format stays the default; the OpenMetrics one is made from it: counter
//! families named without `_total`, no blank lines, exemplars after the bucket samples, `# EOF`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::histogram::render_labels;

/// The `Content-Type` of the OpenMetrics exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (and does not refuse it with `q=0`).
pub(crate) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        params.next().is_some_and(|media| media.eq_ignore_ascii_case("application/openmetrics-text"))
            && !params.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f64>().is_ok_and(|q| q <= 0.0)))
    })
}

/// The latest sampled observation of each bucket of one histogram series. Best effort: a
/// record that finds the slots busy is skipped, so no request ever waits on another.
#[derive(Debug)]
pub(crate) struct Exemplars {
    /// The buckets' upper bounds, `+Inf` last implied.
    bounds: &'static [f64],
    slots: Mutex<Vec<Option<Exemplar>>>,
}

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    sample: Sampled,
    value: f64,
}

/// An observation of a sampled trace: the trace and span it was made in, and when it ended
/// (a reading the caller already has: the clock is read for the exposition instead, which is
/// rare, not for each observation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sampled {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) at: Instant,
}

/// `at` in Unix seconds, by the wall clock now.
fn unix_seconds(at: Instant) -> f64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let now = Instant::now();
    match now.checked_duration_since(at) {
        Some(ago) => wall - ago.as_secs_f64(),
        None => wall + at.duration_since(now).as_secs_f64(),
    }
}

impl Exemplars {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, slots: Mutex::new(vec![None; bounds.len() + 1]) }
    }

    /// Keeps `seconds`, observed as `sample` says, for its bucket.
    pub(crate) fn record(&self, seconds: f64, sample: Sampled) {
        let bucket = self.bounds.iter().position(|bound| seconds <= *bound).unwrap_or(self.bounds.len());
        if let Ok(mut slots) = self.slots.try_lock()
            && let Some(slot) = slots.get_mut(bucket)
        {
            *slot = Some(Exemplar { sample, value: seconds });
        }
    }

    /// The exemplar of the bucket whose upper bound is `le` (`0.005`, `+Inf`).
    fn of_bucket(&self, le: &str) -> Option<Exemplar> {
        let bucket = if le == "+Inf" {
            self.bounds.len()
        } else {
            let bound: f64 = le.parse().ok()?;
            self.bounds.iter().position(|b| (*b - bound).abs() <= f64::EPSILON * b.abs().max(1.0))?
        };
        *self.slots.lock().unwrap_or_else(PoisonError::into_inner).get(bucket)?
    }
}

/// Every histogram series with exemplars, by metric name, then by its labels as the exposition
/// writes them (`route="/mobile/home"`): a bucket line finds its series without allocating.
#[derive(Debug, Default)]
pub(crate) struct ExemplarIndex(RwLock<HashMap<&'static str, HashMap<String, Arc<Exemplars>>>>);

impl ExemplarIndex {
    /// The exemplars of series `name{labels}` (registered once, then shared).
    pub(crate) fn series(
        &self,
        name: &'static str,
        labels: &[(&'static str, String)],
        bounds: &'static [f64],
    ) -> Arc<Exemplars> {
        let rendered = render_labels(labels);
        let mut index = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let series = index.entry(name).or_default();
        series.entry(rendered).or_insert_with(|| Arc::new(Exemplars::new(bounds))).clone()
    }

    fn find(&self, name: &str, labels: &str) -> Option<Arc<Exemplars>> {
        let index = self.0.read().unwrap_or_else(PoisonError::into_inner);
        index.get(name)?.get(labels).cloned()
    }
}

/// The OpenMetrics exposition of `text`, a Prometheus text exposition, with the exemplars of
/// `index` on their buckets.
pub(crate) fn convert(text: &str, index: &ExemplarIndex) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some((kind, rest)) =
            line.strip_prefix("# HELP ").map(|r| ("HELP", r)).or(line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
        {
            // A counter family is named without its samples' `_total`.
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = if counters.contains(&name) { name.strip_suffix("_total").unwrap_or(name) } else { name };
            let _ = writeln!(out, "# {kind} {family} {tail}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        out.push_str(line);
        if let Some(exemplar) = bucket_exemplar(line, index) {
            let _ = write!(
                out,
                " # {{trace_id=\"{:032x}\",span_id=\"{:016x}\"}} {} {:.3}",
                exemplar.sample.trace_id,
                exemplar.sample.span_id,
                exemplar.value,
                unix_seconds(exemplar.sample.at)
            );
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

/// The exemplar for a `…_bucket{…,le="…"} n` sample line, if its series keeps them.
fn bucket_exemplar(line: &str, index: &ExemplarIndex) -> Option<Exemplar> {
    let (name, rest) = line.split_once('{')?;
    let name = name.strip_suffix("_bucket")?;
    let labels = &rest[..rest.rfind('}')?];
    // `le="` cannot occur inside a value, where a quote is escaped.
    let at = if labels.starts_with("le=\"") { 0 } else { labels.find(",le=\"")? + 1 };
    let value_start = at + "le=\"".len();
    let value_end = value_start + labels[value_start..].find('"')?;
    let le = &labels[value_start..value_end];
    let before = labels[..at].trim_end_matches(',');
    let after = labels[value_end + 1..].trim_start_matches(',');
    let others = match (before.is_empty(), after.is_empty()) {
        (_, true) => before.to_owned(),
        (true, false) => after.to_owned(),
        (false, false) => format!("{before},{after}"),
    };
    index.find(name, &others)?.of_bucket(le)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01];

    #[test]
    fn openmetrics_is_asked_for_by_media_type_unless_refused() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wanted(prometheus));
        assert!(wanted("Application/OpenMetrics-Text"));
        assert!(!wanted("text/plain;version=0.0.4"));
        assert!(!wanted("*/*"));
        assert!(!wanted("application/openmetrics-text;q=0, text/plain"));
        assert!(!wanted("application/openmetrics-textual"));
    }

    #[test]
    fn exemplars_sit_on_their_bucket_and_families_read_as_openmetrics() {
        let index = ExemplarIndex::default();
        let series = index.series("t_duration_seconds", &[("route", "/a\"b".to_owned())], BOUNDS);
        // The first observed a minute ago: its timestamp is a minute before the exposition's.
        let ago = |seconds| Instant::now().checked_sub(Duration::from_secs(seconds)).unwrap();
        let first = Sampled {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
            at: ago(60),
        };
        series.record(0.004, first);
        series.record(3.0, Sampled { trace_id: 7, span_id: 8, at: ago(0) });
        let text = "# HELP t_total Things.\n# TYPE t_total counter\nt_total{k=\"v\"} 3\n\n\
                    # TYPE t_duration_seconds histogram\n\
                    t_duration_seconds_bucket{route=\"/a\\\"b\",le=\"0.0025\"} 0\n\
                    t_duration_seconds_bucket{route=\"/a\\\"b\",le=\"0.005\"} 1\n\
                    t_duration_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 2\n\
                    t_duration_seconds_bucket{route=\"/other\",le=\"0.005\"} 1\n\
                    t_duration_seconds_sum{route=\"/a\\\"b\"} 3.004\n";
        let open = convert(text, &index);
        let lines: Vec<&str> = open.lines().collect();
        assert_eq!(lines[..3], ["# HELP t Things.", "# TYPE t counter", "t_total{k=\"v\"} 3"], "{open}");
        assert!(!lines.contains(&""), "no blank line: {open}");
        assert_eq!(lines[4], "t_duration_seconds_bucket{route=\"/a\\\"b\",le=\"0.0025\"} 0", "{open}");
        let with = lines[5].split_once(" # ").map(|(_, e)| e).unwrap_or_else(|| panic!("{open}"));
        assert!(
            with.starts_with("{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.004 "),
            "{with}"
        );
        let at: f64 = with.rsplit(' ').next().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{with}"));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - 60.0 - at).abs() < 5.0, "a minute ago in Unix seconds: {at} against {now}");
        assert!(lines[6].contains("# {trace_id=\"00000000000000000000000000000007\",span_id=\"0000000000000008\"} 3 "));
        assert!(!lines[7].contains(" # "), "another series keeps none: {open}");
        assert_eq!(lines.last(), Some(&"# EOF"));
    }
}
