//! `bff-partner`: serve the partner BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Demo, Spec};

const SPEC: Spec = Spec {
    name: "bff-partner",
    about: "The partner API's Backend-for-Frontend: versioned, API keys, a frozen OpenAPI contract.",
    default_config_name: "config/partner.toml",
    default_config: bff_partner::DEFAULT_CONFIG,
    demo_path: "/v2/orders?user=42",
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_partner::app, async || {
        let mocks = services_mock::start(&services_mock::MockConfig::ephemeral()).await.map_err(|e| e.to_string())?;
        let credential = "X-Api-Key: demo-pro-key".to_owned();
        Ok(Demo::new(mocks.config_overrides(), credential, mocks))
    })
    .await
}
