//! Histograms with fixed buckets, counted as each value is recorded.
//!
//! A recorded value is one atomic increment of its bucket and one of the sum: nothing is kept per
//! value, so a series' memory is fixed (one counter per bucket) whatever the request rate and
//! however long nobody scrapes. The Prometheus exporter's own histograms keep every value until an
//! upkeep folds them into buckets (what that held under load: bench/README.md).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::HistogramFn;

/// The buckets' upper bounds, in seconds (`+Inf` implied after the last).
pub(crate) const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// One histogram series: how many values fell in each bucket, and their sum.
#[derive(Debug)]
pub(crate) struct Series {
    /// Per bucket (not cumulative), `+Inf` last.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Default for Series {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0f64.to_bits()) }
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        // A NaN would poison the sum for good; durations are never one.
        if value.is_nan() || count == 0 {
            return;
        }
        let bucket = BUCKETS.iter().position(|bound| value <= *bound).unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(count as u64, Ordering::Relaxed);
        let add = value * count as f64;
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + add).to_bits()));
    }
}

impl Series {
    /// Appends the series' `_bucket` (cumulative, `+Inf` last), `_sum` and `_count` lines. The
    /// count is the `+Inf` bucket's, so the two agree even while values are being recorded.
    fn render(&self, name: &str, labels: &str, text: &mut String) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BUCKETS.get(i) {
                Some(bound) => writeln!(text, "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"),
                None => writeln!(text, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"),
            }
            .unwrap_or_default();
        }
        let sum = Sample(f64::from_bits(self.sum.load(Ordering::Relaxed)));
        let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        writeln!(text, "{name}_sum{braced} {sum}\n{name}_count{braced} {cumulative}").unwrap_or_default();
    }
}

/// A sample value as the text format spells it: Rust writes an infinite sum as `inf`, which a
/// scraper refuses, where the format says `+Inf`.
struct Sample(f64);

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            f64::INFINITY => f.write_str("+Inf"),
            f64::NEG_INFINITY => f.write_str("-Inf"),
            value => write!(f, "{value}"),
        }
    }
}

/// Every histogram series of a registry: by metric name, then by its labels as the exposition
/// writes them.
#[derive(Debug, Default)]
pub(crate) struct Histograms(Mutex<BTreeMap<&'static str, BTreeMap<String, Arc<Series>>>>);

impl Histograms {
    /// The series `name{labels}`: registered on first use, then shared.
    pub(crate) fn series(&self, name: &'static str, labels: &[(&'static str, String)]) -> Arc<Series> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(name).or_default().entry(render_labels(labels)).or_default().clone()
    }

    /// Appends every family in the Prometheus text format, `help` giving each its `# HELP` text.
    pub(crate) fn render(&self, help: impl Fn(&str) -> Option<&'static str>, text: &mut String) {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, series) in all.iter() {
            if let Some(help) = help(name) {
                writeln!(text, "# HELP {name} {}", help.replace('\\', r"\\").replace('\n', r"\n")).unwrap_or_default();
            }
            writeln!(text, "# TYPE {name} histogram").unwrap_or_default();
            for (labels, series) in series {
                series.render(name, labels, text);
            }
            text.push('\n');
        }
    }
}

/// Labels as the text formats write them: `route="/a",method="GET"`.
pub(crate) fn render_labels(labels: &[(&'static str, String)]) -> String {
    let mut rendered = String::new();
    for (i, (label, value)) in labels.iter().enumerate() {
        let separator = if i == 0 { "" } else { "," };
        let value = value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n");
        write!(rendered, "{separator}{label}=\"{value}\"").unwrap_or_default();
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(histograms: &Histograms) -> String {
        let mut text = String::new();
        histograms.render(|name| (name == "t_seconds").then_some("Time of things."), &mut text);
        text
    }

    #[test]
    fn values_fall_in_their_bucket_and_render_cumulatively() {
        let histograms = Histograms::default();
        let series = histograms.series("t_seconds", &[("route", "/a\"b".to_owned())]);
        // On a bound counts in that bucket; past the last, in +Inf only.
        for value in [0.001, 0.004, 0.004, 7.0] {
            series.record(value);
        }
        series.record_many(0.3, 2);
        series.record(f64::NAN);
        series.record_many(1.0, 0);
        let text = rendered(&histograms);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["# HELP t_seconds Time of things.", "# TYPE t_seconds histogram"], "{text}");
        let bucket = |le: &str| {
            let prefix = format!("t_seconds_bucket{{route=\"/a\\\"b\",le=\"{le}\"}} ");
            lines.iter().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("{le}: {text}"))
        };
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.0025"), "1");
        assert_eq!(bucket("0.005"), "3");
        assert_eq!(bucket("0.25"), "3");
        assert_eq!(bucket("0.5"), "5");
        assert_eq!(bucket("5"), "5");
        assert_eq!(bucket("+Inf"), "6");
        assert!(text.contains("t_seconds_count{route=\"/a\\\"b\"} 6\n"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("t_seconds_sum{route=\"/a\\\"b\"} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!((sum - 7.609).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_series_is_registered_once_and_families_are_written_together() {
        let histograms = Histograms::default();
        let a = histograms.series("t_seconds", &[("upstream", "a".to_owned())]);
        histograms.series("u_seconds", &[]).record(0.02);
        histograms.series("t_seconds", &[("upstream", "b".to_owned())]).record(0.02);
        histograms.series("t_seconds", &[("upstream", "a".to_owned())]).record(0.02);
        a.record(0.02);
        let text = rendered(&histograms);
        assert!(text.contains("t_seconds_count{upstream=\"a\"} 2\n"), "{text}");
        assert!(text.contains("u_seconds_sum 0.02\nu_seconds_count 1\n"), "{text}");
        assert!(text.contains("u_seconds_bucket{le=\"0.025\"} 1\n"), "{text}");
        // One TYPE line per family, each family's lines together.
        assert_eq!(text.matches("# TYPE t_seconds histogram").count(), 1);
        let b = text.find("upstream=\"b\"").unwrap_or_default();
        assert!(text.find("u_seconds").is_some_and(|u| u > b), "{text}");
        assert!(!text.contains("# HELP u_seconds"), "no help text given: {text}");
    }

    #[test]
    fn an_infinite_value_counts_past_the_last_bound_and_the_sum_reads_as_the_format_spells_it() {
        let histograms = Histograms::default();
        histograms.series("t_seconds", &[]).record(f64::INFINITY);
        let text = rendered(&histograms);
        assert!(text.contains("t_seconds_bucket{le=\"5\"} 0\nt_seconds_bucket{le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_sum +Inf\nt_seconds_count 1\n"), "{text}");
    }

    #[test]
    fn a_series_holds_no_value_it_recorded() {
        // The memory of a series is its counters, however many values it counted.
        assert!(size_of::<Series>() <= 8 * (BUCKETS.len() + 2), "{}", size_of::<Series>());
        let series = Series::default();
        for i in 0..100_000 {
            series.record(f64::from(i % 1000) / 1000.0);
        }
        let total: u64 = series.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 100_000);
    }
}
