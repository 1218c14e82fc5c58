//! The shared command line of every BFF binary: flags, config loading, logging, serving.
//!
//! A BFF's `main` is one call, [`main`], given what the binary is ([`Spec`]) and its [`MakeApp`]. A
//! process that runs several BFFs at once (`bff-demo`) loads each configuration with
//! [`config::load`](crate::config::load) and runs each as a [`Bff`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;

pub use crate::app::MakeApp;
use crate::app::{BuildError, Gateway, GatewayBuilder};
use crate::config::{Config, ConfigError, ConfigSource, LogFormat, Overrides, load, redacted};
use crate::observe::logging;
use crate::reload::{Load, Reloader};
use crate::serve::{RELOAD_CHECK_INTERVAL, ReloadableApp, Signal, shutdown_signal};

/// Flags every BFF binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct Args {
    /// The TOML config file (required: a BFF has no built-in config).
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
    /// Print the effective configuration (file, then `BFF_*` variables, then flags, with every
    /// default filled in and secrets redacted) as TOML, and exit.
    #[arg(long, conflicts_with = "check_config")]
    pub print_config: bool,
    /// Check the configuration as start-up would (keys, values, TLS files, the upstreams the
    /// routes need), print what is wrong, and exit: 0 when it would start, 2 when not.
    #[arg(long)]
    pub check_config: bool,
}

/// The command line of a BFF binary, named and described per binary.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// What a BFF binary tells the shared command line about itself.
///
/// ```
/// use bff_core::cli::Spec;
///
/// const SPEC: Spec = Spec::new("bff-mobile", "The mobile app's BFF.", "config/mobile.toml");
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Spec {
    /// The binary's name, for messages (`bff-mobile`).
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The local-development config in the repository (`config/mobile.toml`), named when no
    /// config is given.
    pub dev_config: &'static str,
    /// What the binary adds to its gateway before it is built (layers around an upstream's
    /// attempts: [`GatewayBuilder::upstream_layer`]); nothing by default.
    pub gateway: fn(GatewayBuilder) -> GatewayBuilder,
}

impl Spec {
    /// A binary called `name`, described by `about`, whose local-development config is
    /// `dev_config`.
    pub const fn new(name: &'static str, about: &'static str, dev_config: &'static str) -> Self {
        Self { name, about, dev_config, gateway: std::convert::identity }
    }

    /// Adds to the gateway before it is built, at start-up and on each reload:
    /// `Spec::new(…).gateway(|builder| builder.upstream_layer("payments", Sign::new()))`.
    pub const fn gateway(mut self, gateway: fn(GatewayBuilder) -> GatewayBuilder) -> Self {
        self.gateway = gateway;
        self
    }
}

/// A BFF binary's whole `main`: installs `ring` as the process's crypto provider, parses flags,
/// loads the configuration and serves the app until Ctrl-C or SIGTERM (or, with
/// `--print-config` / `--check-config`, prints and exits).
///
/// Exit codes: 0 after a clean shutdown, 2 for a configuration that cannot be used, 1 when the
/// server cannot listen or fails.
pub async fn main(spec: Spec, app: MakeApp) -> ExitCode {
    crate::install_crypto_provider();
    let matches = <Cli as clap::CommandFactory>::command().name(spec.name).about(spec.about).get_matches();
    let args = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli.args,
        Err(e) => e.exit(),
    };
    let (config, source) = match load_config(&spec, &args, std::env::vars()) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&spec, &e, ExitCode::from(2)),
    };
    if args.print_config {
        return match redacted(&config) {
            Ok(text) => {
                println!("# {}: the effective configuration of {source}, secrets redacted\n{text}", spec.name);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&spec, &e, ExitCode::FAILURE),
        };
    }
    if args.check_config {
        return match check((spec.gateway)(Gateway::builder(config)), &source, app).await {
            Ok(()) => {
                println!("{}: {source} is a configuration it can start with", spec.name);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&spec, &e, ExitCode::from(2)),
        };
    }
    let _log_guard = logging::init(config.log.format, &config.log.filter, std::env::var("RUST_LOG").ok().as_deref());
    run(spec, args, config, source, app).await
}

fn fail(spec: &Spec, error: &dyn fmt::Display, code: ExitCode) -> ExitCode {
    eprintln!("{}: {error}", spec.name);
    code
}

/// What `--check-config` checks beyond loading: the gateway builds and the app finds what it needs.
async fn check(builder: GatewayBuilder, source: &str, app: MakeApp) -> Result<(), BuildError> {
    let gateway = builder.source(source).build().await?;
    let _router = app(&gateway)?;
    Ok(())
}

/// Reads the config file named by `args` and applies the environment (`BFF_*` and the
/// OpenTelemetry variables), then the flags. Returns the configuration and its file's
/// name. Without a file, the error says what to pass.
pub(crate) fn load_config(
    spec: &Spec,
    args: &Args,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, String), ConfigError> {
    let Some(path) = &args.config else {
        return Err(ConfigError {
            source: "the command line".to_owned(),
            key: None,
            message: format!(
                "no config file: pass --config FILE (or set BFF_CONFIG=FILE). A BFF has no built-in \
                 config: its upstreams' URLs (`upstreams.<name>.url`) and whom it trusts (`auth.jwks_url`, \
                 `api_keys`) have no safe default. To try it locally, `cargo run --release -p bff-demo` \
                 runs every BFF with mock upstreams; `--config {}` is this BFF's local-development \
                 config, for the mock services on their default ports (`cargo run -p services-mock`).",
                spec.dev_config
            ),
        });
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: format!("--config {name}"),
        key: None,
        message: format!("cannot read the file: {e}"),
    })?;
    let mut overrides = Overrides::from_env(env);
    overrides.extend(flag_overrides(args));
    let config = load(&ConfigSource { name: name.clone(), text }, &overrides)?;
    Ok((config, name))
}

/// The keys the flags set; they win over the file and the environment.
fn flag_overrides(args: &Args) -> Overrides {
    let mut overrides = Overrides::default();
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
    overrides
}

/// Builds the app, binds its listeners and serves until Ctrl-C or SIGTERM, reloading on SIGHUP
/// and when the config file changes.
async fn run(spec: Spec, args: Args, config: Config, source: String, app: MakeApp) -> ExitCode {
    let bff = match Bff::bind_with((spec.gateway)(Gateway::builder(config)), &source, app).await {
        Ok(bff) => bff,
        Err(e) => return fail(&spec, &e, e.exit_code()),
    };
    tracing::info!(name = spec.name, addr = %bff.addr(), admin = ?bff.admin_addr(), config = %source, "listening");
    let reload_args = args.clone();
    let load: Load = Box::new(move || load_config(&spec, &reload_args, std::env::vars()));
    let reloading =
        Reloader::new(&bff.gateway, app, bff.router.clone(), load).watch(args.config.clone(), RELOAD_CHECK_INTERVAL);
    let result = bff.serve(shutdown_signal()).await;
    reloading.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&spec, &format!("server error: {e}"), ExitCode::FAILURE),
    }
}

/// One BFF, built from its configuration, with its listeners bound: what [`main`] serves, and
/// what a process running several BFFs (`bff-demo`) starts once per BFF.
#[derive(Debug)]
pub struct Bff {
    gateway: Gateway,
    router: ReloadableApp,
    public: TcpListener,
    admin: Option<TcpListener>,
}

/// Why a [`Bff`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot be used (a key, a TLS file, an upstream the routes need).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// An address cannot be listened on.
    #[error("cannot listen on {addr} (`{key}` in {source_name}): {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The key that set it: `listen` or `admin.listen`.
        key: &'static str,
        /// The config file's name.
        source_name: String,
        /// What the system said.
        error: std::io::Error,
    },
}

impl StartError {
    /// The process exit code a binary reports it with: 2 for configuration, 1 for the rest.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Build(_) => ExitCode::from(2),
            Self::Listen { .. } => ExitCode::FAILURE,
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        Self::Build(error.into())
    }
}

impl Bff {
    /// Builds the gateway from `config` (read from `source`), the app's router on it, and binds
    /// `listen` and `admin.listen`.
    pub async fn bind(config: Config, source: &str, app: MakeApp) -> Result<Self, StartError> {
        Self::bind_with(Gateway::builder(config), source, app).await
    }

    /// As [`Bff::bind`], with a gateway builder the caller added to (an upstream layer).
    pub async fn bind_with(builder: GatewayBuilder, source: &str, app: MakeApp) -> Result<Self, StartError> {
        let gateway = builder.source(source).build().await?;
        let router = ReloadableApp::new(app(&gateway)?);
        let listen = |addr: SocketAddr, key: &'static str| async move {
            let source_name = source.to_owned();
            TcpListener::bind(addr).await.map_err(|error| StartError::Listen { addr, key, source_name, error })
        };
        let public = listen(gateway.config().listen, "listen").await?;
        let admin = match &gateway.config().admin {
            Some(admin) => Some(listen(admin.listen, "admin.listen").await?),
            None => {
                tracing::warn!("no `admin.listen`: /metrics and /readyz are not served");
                None
            }
        };
        Ok(Self { gateway, router, public, admin })
    }

    /// The address client traffic is served on.
    pub fn addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or(self.gateway.config().listen)
    }

    /// The address `/metrics` and `/readyz` are served on, when there is an admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains as [`Gateway::serve`] does.
    pub async fn serve(self, shutdown: impl Future<Output = Signal> + Send + 'static) -> std::io::Result<()> {
        self.gateway.serve(self.public, self.admin, self.router, shutdown).await
    }
}
