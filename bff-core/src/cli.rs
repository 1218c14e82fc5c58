//! The shared command line of every BFF binary: flags, config loading, logging, serving.

use std::any::Any;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Router;
use tokio::net::TcpListener;

use crate::app::{Gateway, serve, shutdown_signal};
use crate::config::{Config, ConfigError, ConfigSource, LogFormat, Overrides, load};
use crate::observe::logging;

/// Flags every BFF binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TOML config file; the shipped `config/<bff>.toml` is built in and used when absent.
    #[arg(long, env = "BFF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Start the mock services in-process on free ports and point every upstream at them.
    #[arg(long)]
    pub demo: bool,
}

/// The command line of a BFF binary: the shared [`Args`], named and described per binary.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// What a BFF binary tells the shared command line about itself.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The binary's name, for messages.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The shipped config's path, for messages.
    pub default_config_name: &'static str,
    /// The shipped config's text (`include_str!`).
    pub default_config: &'static str,
    /// The endpoint the demo's `curl` line calls.
    pub demo_path: &'static str,
}

/// The in-process mock services of `--demo`, as the command line needs them.
pub struct Demo {
    /// Config overrides pointing upstreams (and the JWKS) at the mocks; each applies only where
    /// the config has that section.
    pub overrides: Vec<(String, String)>,
    /// The credential header for the printed `curl` line (`Authorization: Bearer …`).
    pub credential: String,
    /// Keeps the mocks running for as long as the BFF does.
    pub keep_alive: Box<dyn Any + Send>,
}

impl Demo {
    /// Bundles what `--demo` needs; `keep_alive` (the running mocks) lives as long as the server.
    pub fn new(overrides: Vec<(String, String)>, credential: String, keep_alive: impl Any + Send) -> Self {
        Self { overrides, credential, keep_alive: Box::new(keep_alive) }
    }
}

/// A BFF binary's whole `main`: parses flags, starts the demo services when `--demo` is given
/// (`demo` is only called then), and runs the app until Ctrl-C or SIGTERM.
pub async fn main<F>(spec: Spec, app: fn(&Gateway) -> Result<Router, ConfigError>, demo: F) -> ExitCode
where
    F: AsyncFnOnce() -> Result<Demo, String>,
{
    crate::install_crypto_provider();
    let matches = <Cli as clap::CommandFactory>::command().name(spec.name).about(spec.about).get_matches();
    let args = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli.args,
        Err(e) => e.exit(),
    };
    let demo = if args.demo {
        match demo().await {
            Ok(demo) => Some(demo),
            Err(e) => {
                eprintln!("{}: cannot start the demo services: {e}", spec.name);
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    run(spec, args, demo, app).await
}

/// Reads the config named by `args` (or the built-in one) and applies environment and flags.
pub fn load_config(
    spec: &Spec,
    args: &Args,
    env: impl IntoIterator<Item = (String, String)>,
    extra: Vec<(String, String)>,
) -> Result<(Config, String), ConfigError> {
    let source = match &args.config {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                source: format!("--config {name}"),
                key: None,
                message: format!("cannot read the file: {e}"),
            })?;
            ConfigSource { name, text }
        }
        None => ConfigSource {
            name: format!("built-in {}", spec.default_config_name),
            text: spec.default_config.to_owned(),
        },
    };
    let mut overrides = Overrides::default();
    for (key, value) in extra {
        overrides.set_existing(key, value, "--demo");
    }
    overrides.extend(Overrides::from_env(env));
    if let Some(listen) = args.listen {
        overrides.set("listen", listen.to_string(), "--listen");
    }
    if let Some(format) = args.log_format {
        let name = if format == LogFormat::Json { "json" } else { "pretty" };
        overrides.set("log.format", name, "--log-format");
    }
    let config = load(&source, &overrides)?;
    Ok((config, source.name))
}

/// Loads the config, builds the app, serves it until Ctrl-C or SIGTERM.
pub async fn run(
    spec: Spec,
    args: Args,
    demo: Option<Demo>,
    app: fn(&Gateway) -> Result<Router, ConfigError>,
) -> ExitCode {
    let extra = demo.as_ref().map(|d| d.overrides.clone()).unwrap_or_default();
    let (config, source) = match load_config(&spec, &args, std::env::vars(), extra) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::from(2);
        }
    };
    let _log_guard = logging::init(config.log.format, &config.log.filter, std::env::var("RUST_LOG").ok().as_deref());
    let gateway = match Gateway::builder(config).source(source.clone()).build().await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::from(2);
        }
    };
    let router = match app(&gateway) {
        Ok(router) => router,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::from(2);
        }
    };
    let listen = gateway.config().listen;
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("{}: cannot listen on {listen} (`listen` in {source}, or --listen): {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!(name = spec.name, %addr, config = %source, "listening");
    if let Some(demo) = &demo {
        println!("\n{} is running with demo upstreams. Try:\n", spec.name);
        println!("  curl -s -H '{}' 'http://{addr}{}'\n", demo.credential, spec.demo_path);
    }
    let result = serve(listener, router, shutdown_signal()).await;
    drop(demo);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: server error: {e}", spec.name);
            ExitCode::FAILURE
        }
    }
}
