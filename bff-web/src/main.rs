//! `bff-web`: serve the web BFF (`--config FILE`; `bff-demo` runs it with mock upstreams).

use std::process::ExitCode;

use bff_core::cli::Spec;

const SPEC: Spec = Spec::new(
    "bff-web",
    "The web app's Backend-for-Frontend: rich payloads, CORS for the app's origins.",
    "config/web.toml",
);

bff_core::jemalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_web::app).await
}
