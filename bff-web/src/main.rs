//! `bff-web`: serve the web BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Example, ExampleCredential, Spec};

const SPEC: Spec = Spec {
    name: "bff-web",
    about: "The web app's Backend-for-Frontend: rich payloads, CORS for the app's origins.",
    default_config_name: "config/web.toml",
    default_config: bff_web::DEFAULT_CONFIG,
    example: Example {
        path: "/web/home",
        credential: ExampleCredential::Bearer { subject: "42", scope: "profile orders" },
    },
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main::<bff_demo::Demo>(SPEC, bff_web::app).await
}
