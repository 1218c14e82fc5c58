//! `bff-web`: serve the web BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Demo, Spec};

const SPEC: Spec = Spec {
    name: "bff-web",
    about: "The web app's Backend-for-Frontend: rich payloads, CORS for the app's origins.",
    default_config_name: "config/web.toml",
    default_config: bff_web::DEFAULT_CONFIG,
    demo_path: "/web/home",
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::cli::main(SPEC, bff_web::app, async || {
        let mocks = services_mock::start(&services_mock::MockConfig::ephemeral()).await.map_err(|e| e.to_string())?;
        let credential = format!("Authorization: Bearer {}", mocks.token("42", "profile orders", 3600));
        Ok(Demo::new(mocks.config_overrides(), credential, mocks))
    })
    .await
}
