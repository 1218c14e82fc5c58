//! `bff-mobile`: serve the mobile BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Demo, Spec};

const SPEC: Spec = Spec {
    name: "bff-mobile",
    about: "The mobile app's Backend-for-Frontend: small, flat payloads, one round trip per screen.",
    default_config_name: "config/mobile.toml",
    default_config: bff_mobile::DEFAULT_CONFIG,
    demo_path: "/mobile/home",
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_mobile::app, async || {
        let mocks = services_mock::start(&services_mock::MockConfig::ephemeral()).await.map_err(|e| e.to_string())?;
        let credential = format!("Authorization: Bearer {}", mocks.token("42", "profile orders", 3600));
        Ok(Demo::new(mocks.config_overrides(), credential, mocks))
    })
    .await
}
