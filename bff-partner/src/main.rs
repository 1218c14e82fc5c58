//! `bff-partner`: serve the partner BFF (`--config FILE`; `bff-demo` runs it with mock upstreams).

use std::process::ExitCode;

use bff_core::cli::Spec;

const SPEC: Spec = Spec::new(
    "bff-partner",
    "The partner API's Backend-for-Frontend: versioned, API keys, a frozen OpenAPI contract.",
    "config/partner.toml",
);

bff_core::jemalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_partner::app).await
}
