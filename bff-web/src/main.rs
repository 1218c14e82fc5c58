//! `bff-web`: serve the web BFF (`--demo` embeds the mock services).

use std::process::ExitCode;

use bff_core::cli::{Args, Demo, Spec, run};
use clap::Parser;

/// The web app's Backend-for-Frontend: rich payloads, CORS for the app's origins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

const SPEC: Spec = Spec {
    name: "bff-web",
    default_config_name: "config/web.toml",
    default_config: bff_web::DEFAULT_CONFIG,
    demo_path: "/web/home",
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
                eprintln!("bff-web: cannot start the demo services: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    run(SPEC, args, demo, bff_web::app).await
}
