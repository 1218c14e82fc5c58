//! `bff-partner`: serve the partner BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Example, ExampleCredential, Spec};

const SPEC: Spec = Spec {
    name: "bff-partner",
    about: "The partner API's Backend-for-Frontend: versioned, API keys, a frozen OpenAPI contract.",
    default_config_name: "config/partner.toml",
    default_config: bff_partner::DEFAULT_CONFIG,
    example: Example {
        path: "/v2/orders?user=42",
        credential: ExampleCredential::ApiKey { header: "X-Api-Key", key: "demo-pro-key" },
    },
};

/// jemalloc, with its background thread: memory freed after a burst (a flood of connections) goes
/// back to the system within seconds, where glibc's per-thread arenas keep it (bench/README.md,
/// "Floods").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main::<bff_demo::Demo>(SPEC, bff_partner::app).await
}
