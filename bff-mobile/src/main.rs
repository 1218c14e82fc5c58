//! `bff-mobile`: serve the mobile BFF (`--config FILE`; `bff-demo` runs it with mock upstreams).

use std::process::ExitCode;

use bff_core::cli::Spec;

const SPEC: Spec = Spec::new(
    "bff-mobile",
    "The mobile app's Backend-for-Frontend: small, flat payloads, one round trip per screen.",
    "config/mobile.toml",
);

/// jemalloc, with its background thread: memory freed after a burst (a flood of connections) goes
/// back to the system within seconds, where glibc's per-thread arenas keep it (bench/README.md,
/// "Floods").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_mobile::app).await
}
