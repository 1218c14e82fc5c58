//! `bff-mobile`: serve the mobile BFF (`--config FILE`; `bff-demo` runs it with mock upstreams).

use std::process::ExitCode;

use bff_core::cli::Spec;

const SPEC: Spec = Spec::new(
    "bff-mobile",
    "The mobile app's Backend-for-Frontend: small, flat payloads, one round trip per screen.",
    "config/mobile.toml",
);

bff_core::jemalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_mobile::app).await
}
