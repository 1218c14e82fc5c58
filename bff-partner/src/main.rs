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

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main::<bff_demo::Demo>(SPEC, bff_partner::app).await
}
