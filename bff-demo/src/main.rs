//! `bff-demo`: the mock services and the web, mobile and partner BFFs in one process.

use std::process::ExitCode;

use bff_core::config::LogFormat;
use bff_core::observe::logging;
use bff_demo::{Demo, Options};
use clap::Parser;

/// The mock services and all three BFFs in one process, on the local-development configs: web on
/// 8080, mobile on 8081, partner on 8082 (admin 9080–9082). Prints a `curl` line per BFF.
#[derive(Debug, Parser)]
#[command(name = "bff-demo", version)]
struct Cli {
    /// Listen on free ports of 127.0.0.1 instead (the printed lines say which).
    #[arg(long)]
    any_port: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "pretty", value_name = "FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = logging::init(cli.log_format, "info", std::env::var("RUST_LOG").ok().as_deref());
    let demo = match Demo::start(Options::default().any_port(cli.any_port)).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("bff-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", demo.banner());
    match demo.serve(bff_core::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bff-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
