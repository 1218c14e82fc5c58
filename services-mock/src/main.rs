//! `services-mock`: run the mock downstream services as one process.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;
use services_mock::{Faults, MockConfig, Service};

/// The downstream services a BFF fans out to: auth 7000, users 7001, orders 7002,
/// notifications 7003, catalog 7004, inventory 7005, reviews 7006.
///
/// Every listener also answers `GET|DELETE /_stats` and `GET|PUT|DELETE /_faults`, where faults are
/// `{"latency_ms": 100, "jitter_ms": 0, "error_rate": 0.0, "hang": false, "malformed": false,
/// "reset": false, "fail_every": 0, "down_ms": 0, "up_ms": 0}` (every field optional; the last
/// three flap: the first of every N requests answers 500 after it was handled, or the service
/// fails for `down_ms` then recovers for `up_ms`, in a cycle).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// TOML file: `listen = "127.0.0.1"`, `[ports] users = 7001`, `[faults.users] latency_ms = 100`.
    #[arg(long, env = "MOCK_CONFIG")]
    config: Option<PathBuf>,
    /// The IP address every service binds to.
    #[arg(long, env = "MOCK_LISTEN")]
    listen: Option<IpAddr>,
    /// Override one service's port, e.g. `--port users=9001` (0 picks a free port). Repeatable.
    #[arg(long = "port", value_name = "SERVICE=PORT", value_parser = parse_port)]
    ports: Vec<(Service, u16)>,
    /// Inject faults into one service, e.g. `--fault notifications:latency_ms=100,jitter_ms=20`,
    /// `--fault users:error_rate=0.5`, `--fault orders:hang`, `--fault catalog:malformed`,
    /// `--fault reviews:reset`, `--fault users:down_ms=2000,up_ms=8000`. Repeatable.
    #[arg(long = "fault", value_name = "SERVICE:KEY=VALUE,...", value_parser = parse_fault)]
    faults: Vec<(Service, Faults)>,
    /// Run several identical listeners of one service, e.g. `--instances catalog=3`, each with its
    /// own `/_faults` and `/_stats`; the k-th extra one listens on the service's port + 100·k.
    /// Repeatable.
    #[arg(long = "instances", value_name = "SERVICE=N", value_parser = parse_instances)]
    instances: Vec<(Service, usize)>,
    /// Start only these services (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Service>,
    /// Log format.
    #[arg(long, value_enum, default_value = "pretty", env = "MOCK_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<IpAddr>,
    #[serde(default)]
    ports: BTreeMap<Service, u16>,
    #[serde(default)]
    faults: BTreeMap<Service, Faults>,
    #[serde(default)]
    instances: BTreeMap<Service, usize>,
}

fn parse_port(s: &str) -> Result<(Service, u16), String> {
    let (service, port) = s.split_once('=').ok_or("expected SERVICE=PORT")?;
    Ok((service.parse()?, port.parse().map_err(|e| format!("invalid port `{port}`: {e}"))?))
}

fn parse_instances(s: &str) -> Result<(Service, usize), String> {
    let (service, count) = s.split_once('=').ok_or("expected SERVICE=N")?;
    let count: usize = count.parse().map_err(|e| format!("invalid count `{count}`: {e}"))?;
    if !(1..=MockConfig::MAX_INSTANCES).contains(&count) {
        return Err(format!("the count must be between 1 and {}, got {count}", MockConfig::MAX_INSTANCES));
    }
    Ok((service.parse()?, count))
}

fn parse_fault(s: &str) -> Result<(Service, Faults), String> {
    let (service, spec) = s.split_once(':').ok_or("expected SERVICE:KEY=VALUE,...")?;
    Ok((service.parse()?, Faults::parse_assignments(spec)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
    match args.log_format {
        LogFormat::Pretty => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }

    let mut config = MockConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        let file: FileConfig =
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        for (service, faults) in &file.faults {
            if let Err(e) = faults.validate() {
                bail!("invalid config file {}: faults.{service}: {e}", path.display());
            }
        }
        config.listen = file.listen.unwrap_or(config.listen);
        config.ports = file.ports;
        config.faults = file.faults;
        for (service, count) in file.instances {
            if !(1..=MockConfig::MAX_INSTANCES).contains(&count) {
                bail!(
                    "invalid config file {}: instances.{service}: between 1 and {}",
                    path.display(),
                    MockConfig::MAX_INSTANCES
                );
            }
            config.instances.insert(service, count);
        }
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.ports.extend(args.ports);
    config.faults.extend(args.faults);
    config.only = args.only;
    config.instances.extend(args.instances);

    let mocks = services_mock::start(&config).await?;
    for (service, _) in mocks.iter() {
        for running in mocks.instances(service) {
            println!("{service:<14} http://{}", running.addr);
        }
    }
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
    drop(mocks);
    Ok(())
}
