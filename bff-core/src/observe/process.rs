//! The process's own series, read at each scrape, under the names Prometheus client libraries'
//! process collectors use (so existing dashboards and alerts find them): CPU seconds, resident
//! and virtual memory, open and maximum file descriptors, start time; and `bff_build_info`.
//!
//! Read from `/proc/self` (Linux); where it is not there, only the build info is written.

use std::fmt::Write as _;

/// The workspace's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built (`build.rs`: `git rev-parse`, or `BFF_GIT_SHA` when set), `unknown` outside
/// a checkout.
const GIT_SHA: &str = env!("BFF_GIT_SHA");

/// Clock ticks per second of `/proc`'s times: `USER_HZ`, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the series of the module docs to `out`, in the Prometheus text format.
pub(crate) fn render(out: &mut String) {
    family(out, "bff_build_info", "gauge", "The version and commit of the running build (always 1).");
    let _ = writeln!(out, "bff_build_info{{version=\"{VERSION}\",git_sha=\"{}\"}} 1", label(GIT_SHA));
    if let Some(process) = Process::read() {
        process.render(out);
    }
}

/// What `/proc/self` says.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl Process {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(&stat, &status, &limits, &boot, open_fds)
    }

    fn parse(stat: &str, status: &str, limits: &str, boot: &str, open_fds: u64) -> Option<Self> {
        // After the command name, which may hold spaces and parentheses: the fields from the
        // third (`state`) on.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        // utime and stime are the 14th and 15th fields, starttime the 22nd.
        let ticks = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let cpu_seconds = (ticks(14)? + ticks(15)?) as f64 / TICKS_PER_SECOND;
        let kib = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
        };
        let max_fds = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| {
            let soft = l["Max open files".len()..].split_whitespace().next()?;
            soft.parse::<u64>().ok()
        });
        let btime = boot.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok());
        let start_time_seconds = match (btime, ticks(22)) {
            (Some(btime), Some(start)) => Some(btime as f64 + start as f64 / TICKS_PER_SECOND),
            _ => None,
        };
        Some(Self {
            cpu_seconds,
            resident_bytes: kib("VmRSS:").unwrap_or(0),
            virtual_bytes: kib("VmSize:").unwrap_or(0),
            open_fds,
            max_fds,
            start_time_seconds,
        })
    }

    fn render(&self, out: &mut String) {
        family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {}", self.cpu_seconds);
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(out, "process_resident_memory_bytes {}", self.resident_bytes);
        family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        let _ = writeln!(out, "process_virtual_memory_bytes {}", self.virtual_bytes);
        family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", self.open_fds);
        if let Some(max) = self.max_fds {
            family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
            let _ = writeln!(out, "process_max_fds {max}");
        }
        if let Some(start) = self.start_time_seconds {
            family(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            let _ = writeln!(out, "process_start_time_seconds {start}");
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `value` as a label value: backslashes, quotes and line breaks escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_prometheus_names_them() {
        let stat = "4242 (bff (web) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 6 0 12345 \
                    100000000 3000 18446744073709551615";
        let status = "Name:\tbff-web\nVmSize:\t  123456 kB\nVmRSS:\t    20480 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\n";
        let process = Process::parse(stat, status, limits, boot, 17).unwrap();
        assert_eq!(
            process,
            Process {
                cpu_seconds: 3.25,
                resident_bytes: 20480 * 1024,
                virtual_bytes: 123456 * 1024,
                open_fds: 17,
                max_fds: Some(1024),
                start_time_seconds: Some(1_700_000_123.45),
            }
        );
        assert_eq!(Process::parse("garbage", status, limits, boot, 1), None);
    }

    #[test]
    fn this_process_is_described() {
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains(&format!("bff_build_info{{version=\"{VERSION}\",git_sha=\"")), "{out}");
        if cfg!(target_os = "linux") {
            for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
                assert!(
                    out.contains(&format!("# HELP {name} ")) && out.contains(&format!("\n{name} ")),
                    "{name}: {out}"
                );
            }
        }
    }
}
