//! `bff-mobile`: serve the mobile BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Args, Demo, Spec, run};
use clap::Parser;

/// The mobile app's Backend-for-Frontend: small, flat payloads, one round trip per screen.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

const SPEC: Spec = Spec {
    name: "bff-mobile",
    default_config_name: "config/mobile.toml",
    default_config: bff_mobile::DEFAULT_CONFIG,
    demo_path: "/mobile/home",
};

#[tokio::main]
async fn main() -> ExitCode {
    bff_core::install_crypto_provider();
    let Cli { args } = Cli::parse();
    let demo = if args.demo {
        match services_mock::start(&services_mock::MockConfig::ephemeral()).await {
            Ok(mocks) => Some(Demo {
                overrides: mocks.config_overrides(),
                credential: format!(
                    "Authorization: Bearer {}",
                    mocks.token("42", "profile orders", 3600)
                ),
                keep_alive: Box::new(mocks),
            }),
            Err(e) => {
                eprintln!("bff-mobile: cannot start the demo services: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    run(SPEC, args, demo, bff_mobile::app).await
}
