//! `bff-partner`: serve the partner BFF (`--config FILE`; `bff-demo` runs it with mock upstreams).

use std::process::ExitCode;

use bff_core::cli::Spec;

const SPEC: Spec = Spec::new(
    "bff-partner",
    "The partner API's Backend-for-Frontend: versioned, API keys, a frozen OpenAPI contract.",
    "config/partner.toml",
);

/// jemalloc, with its background thread: memory freed after a burst (a flood of connections) goes
/// back to the system within seconds, where glibc's per-thread arenas keep it (bench/README.md,
/// "Floods").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_partner::app).await
}
