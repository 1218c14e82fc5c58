//! Running a BFF binary as an operator does, for the binaries' own tests.

use std::process::Command;

/// How a run of a binary ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it printed to stdout.
    pub stdout: String,
    /// What it printed to stderr.
    pub stderr: String,
}

/// Runs `binary` with `args` to its end, with no `BFF_*`, `OTEL_*` or `RUST_LOG` variable of the
/// test's environment. For flags that exit (`--check-config`, `--print-config`) and start-ups
/// that fail: a binary that serves would not return.
pub fn run(binary: &str, args: &[&str]) -> Run {
    let mut command = Command::new(binary);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BFF_") || name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts that `binary`, started with no config, exits 2 without serving and says what to pass,
/// naming its local-development config `dev_config`.
pub fn assert_refuses_without_config(binary: &str, dev_config: &str) {
    let run = run(binary, &["--listen", "127.0.0.1:0"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    for needed in ["no config file", "--config FILE", "BFF_CONFIG", "upstreams.<name>.url", "bff-demo", dev_config] {
        assert!(run.stderr.contains(needed), "`{needed}` is not in what it said: {}", run.stderr);
    }
    assert!(run.stdout.is_empty(), "it logged as if it started: {}", run.stdout);
}

/// Asserts that `binary` allocates through jemalloc configured by [`jemalloc!`](crate::jemalloc):
/// jemalloc says which options it read when `confirm_conf` is on.
pub fn assert_allocator_configured(binary: &str) {
    let output = Command::new(binary)
        .arg("--help")
        .env("_RJEM_MALLOC_CONF", "confirm_conf:true")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let said = String::from_utf8_lossy(&output.stderr);
    let read = "string pointed to by the global variable malloc_conf";
    assert!(said.contains(read), "jemalloc read no options of the binary's: {said}");
    let options = ["narenas:1", "dirty_decay_ms:1000", "muzzy_decay_ms:0", "tcache_gc_incr_bytes:262144"];
    for option in options.into_iter().chain(["background_thread:true"]) {
        assert!(said.contains(&format!("Set conf value: {option}")), "`{option}` is not in effect: {said}");
    }
}
