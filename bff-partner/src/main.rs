//! `bff-partner`: serve the partner API (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Args, Demo, Spec, run};
use clap::Parser;

/// The partner API's Backend-for-Frontend: versioned, API keys, a frozen OpenAPI contract.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

const SPEC: Spec = Spec {
    name: "bff-partner",
    default_config_name: "config/partner.toml",
    default_config: bff_partner::DEFAULT_CONFIG,
    demo_path: "/v2/orders?user=42",
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::install_crypto_provider();
    let Cli { args } = Cli::parse();
    let demo = if args.demo {
        match services_mock::start(&services_mock::MockConfig::ephemeral()).await {
            Ok(mocks) => Some(Demo {
                overrides: mocks.config_overrides(),
                credential: "X-Api-Key: demo-pro-key".to_owned(),
                keep_alive: Box::new(mocks),
            }),
            Err(e) => {
                eprintln!("bff-partner: cannot start the demo services: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    run(SPEC, args, demo, bff_partner::app).await
}
