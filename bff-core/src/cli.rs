//! The shared command line of every BFF binary: flags, config loading, logging, serving.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::app::Gateway;
use crate::config::{Config, ConfigError, ConfigSource, LogFormat, Overrides, load};
use crate::observe::logging;
use crate::reload::{Load, Reloader};
use crate::serve::{RELOAD_CHECK_INTERVAL, ReloadableRouter, shutdown_signal};

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
    /// Serve HTTPS with this PEM certificate chain (overrides `tls.cert`; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (overrides `tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The command line of a BFF binary: the shared [`Args`] plus the binary's own [`Extension`]
/// flags, named and described per binary.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Cli<E: Extension> {
    #[command(flatten)]
    args: Args,
    #[command(flatten)]
    extension: E,
}

/// How a binary shows itself to a new user: the endpoint to try, and as whom.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// The path the printed `curl` line calls.
    pub path: &'static str,
    /// The credential it sends.
    pub credential: ExampleCredential,
}

/// The credential of an [`Example`].
#[derive(Debug, Clone, Copy)]
pub enum ExampleCredential {
    /// A bearer token for `subject` with `scope`, signed by whatever issuer the extension runs.
    Bearer {
        /// The `sub` claim.
        subject: &'static str,
        /// The `scope` claim.
        scope: &'static str,
    },
    /// An API key in a header.
    ApiKey {
        /// The header.
        header: &'static str,
        /// The key.
        key: &'static str,
    },
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
    /// The request a new user can try.
    pub example: Example,
}

/// Something a binary starts in-process before the BFF (embedded upstreams, say).
pub struct Startup {
    /// Config overrides pointing the BFF at what was started; each applies only where the
    /// config has that section.
    pub overrides: Vec<(String, String)>,
    /// Printed once the BFF listens, given its address (a ready-to-paste `curl` line).
    pub banner: Box<dyn FnOnce(SocketAddr) -> String + Send>,
    /// Keeps what was started running for as long as the BFF does.
    pub keep_alive: Box<dyn Any + Send>,
}

/// Flags of a binary's own, and what they start before the BFF.
pub trait Extension: clap::Args + Send + 'static {
    /// Starts what the flags ask for, if anything; an error stops the process with its text.
    fn start(&self, spec: &Spec) -> impl Future<Output = Result<Option<Startup>, String>> + Send;
}

/// No flags of the binary's own.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct NoExtension;

impl Extension for NoExtension {
    async fn start(&self, _spec: &Spec) -> Result<Option<Startup>, String> {
        Ok(None)
    }
}

/// A BFF binary's whole `main`: installs `ring` as the process's crypto provider, parses flags,
/// starts the extension's services, and runs the app until Ctrl-C or SIGTERM.
pub async fn main<E: Extension>(spec: Spec, app: App) -> ExitCode {
    crate::install_crypto_provider();
    let matches = <Cli<E> as clap::CommandFactory>::command().name(spec.name).about(spec.about).get_matches();
    let cli = match <Cli<E> as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let startup = match cli.extension.start(&spec).await {
        Ok(startup) => startup,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    run(spec, cli.args, startup, app).await
}

pub use crate::app::App;

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
        overrides.set_existing(key, value, format!("{}'s start-up", spec.name));
    }
    overrides.extend(Overrides::from_env(env));
    if let Some(listen) = args.listen {
        overrides.set("listen", listen.to_string(), "--listen");
    }
    if let Some(cert) = &args.tls_cert {
        overrides.set("tls.cert", cert.display().to_string(), "--tls-cert");
    }
    if let Some(key) = &args.tls_key {
        overrides.set("tls.key", key.display().to_string(), "--tls-key");
    }
    if let Some(format) = args.log_format {
        let name = if format == LogFormat::Json { "json" } else { "pretty" };
        overrides.set("log.format", name, "--log-format");
    }
    let config = load(&source, &overrides)?;
    Ok((config, source.name))
}

/// Loads the config, builds the app, serves it until Ctrl-C or SIGTERM.
pub async fn run(spec: Spec, args: Args, startup: Option<Startup>, app: App) -> ExitCode {
    let extra = startup.as_ref().map(|s| s.overrides.clone()).unwrap_or_default();
    let (config, source) = match load_config(&spec, &args, std::env::vars(), extra.clone()) {
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
    let admin = match &gateway.config().admin {
        Some(admin) => match TcpListener::bind(admin.listen).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                eprintln!("{}: cannot listen on {} (`admin.listen` in {source}): {e}", spec.name, admin.listen);
                return ExitCode::FAILURE;
            }
        },
        None => {
            tracing::warn!("no `admin.listen`: /metrics and /readyz are not served");
            None
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(name = spec.name, %addr, admin = ?admin_addr, config = %source, "listening");
    let keep_alive = startup.map(|startup| {
        println!("{}", (startup.banner)(addr));
        startup.keep_alive
    });
    let router = ReloadableRouter::new(router);
    let reload_args = args.clone();
    let load: Load = Box::new(move || load_config(&spec, &reload_args, std::env::vars(), extra.clone()));
    let reloading =
        Reloader::new(&gateway, app, router.clone(), load).watch(args.config.clone(), RELOAD_CHECK_INTERVAL);
    let result = gateway.serve(listener, admin, router, shutdown_signal()).await;
    reloading.abort();
    drop(keep_alive);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: server error: {e}", spec.name);
            ExitCode::FAILURE
        }
    }
}
