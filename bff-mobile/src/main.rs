//! `bff-mobile`: serve the mobile BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Example, ExampleCredential, Spec};

const SPEC: Spec = Spec {
    name: "bff-mobile",
    about: "The mobile app's Backend-for-Frontend: small, flat payloads, one round trip per screen.",
    default_config_name: "config/mobile.toml",
    default_config: bff_mobile::DEFAULT_CONFIG,
    example: Example {
        path: "/mobile/home",
        credential: ExampleCredential::Bearer { subject: "42", scope: "profile orders" },
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
    bff_core::cli::main::<bff_demo::Demo>(SPEC, bff_mobile::app).await
}
