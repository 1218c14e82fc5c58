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

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main::<bff_demo::Demo>(SPEC, bff_mobile::app).await
}
