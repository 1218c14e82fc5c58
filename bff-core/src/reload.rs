//! Reloading a BFF's routes without a restart: on SIGHUP, and when its `--config` file changes,
//! the configuration is loaded and checked again, a new [`Gateway`] (upstreams, policies,
//! passthrough routes) and router are built from it, and the served [`ReloadableApp`] is
//! replaced. Requests in flight finish on the router they started on. A configuration that
//! fails is refused with one log line naming the key, and the previous router keeps serving.
//!
//! What the listeners were opened with is not reloaded ([`FIXED`]): their addresses, `[tls]`
//! (its certificates reload on their own), the connection limits and timeouts of `[server]`, and
//! span export (its queue is the process's). A change there is logged, naming each key, as
//! taking a restart, and the rebuilt gateway keeps the value the process started with, so that
//! what each request reads agrees with how its connection was accepted. What a request reads
//! reloads: `server.allowed_hosts`, `max_uri_bytes`, `max_body_bytes`, `max_in_flight_requests`
//! and `trusted_proxies`, `[hsts]`, `tracing.sample_ratio` and `accept_parent`.
//!
//! What the change leaves as it was keeps its state (`carried.rs`): the JWT verifier's keys and
//! token cache while `[auth]` is unchanged, the rate-limit and quota counts while the limits are,
//! and each upstream (breaker, retry budget, ejections, cache, connections) while its section and
//! `defaults` are.
//!
//! Counted in `bff_config_reloads_total{result="ok"|"rejected"}`.

#![cfg_attr(not(any(test, feature = "test-util")), allow(unreachable_pub, reason = "public with `test-util` only"))]

use std::path::PathBuf;
use std::time::Duration;

use metrics::Counter;

use crate::app::{BuildError, Gateway, MakeApp};
use crate::carried;
use crate::config::{Config, ConfigError};
use crate::observe::export::SpanSink;
use crate::observe::metrics::Metrics;
use crate::serve::{ReloadableApp, Triggers, stamp};

/// Loads the configuration again: its value and where it came from.
pub type Load = Box<dyn Fn() -> Result<(Config, String), ConfigError> + Send + Sync>;

/// Rebuilds a BFF's router from its configuration and swaps it in.
pub struct Reloader {
    app: MakeApp,
    load: Load,
    router: ReloadableApp,
    metrics: Metrics,
    /// Where spans go: fixed at start.
    spans: Option<SpanSink>,
    /// The gateway serving now: the next one keeps what is unchanged of it.
    current: std::sync::Mutex<Gateway>,
    /// The configuration the listeners were opened with.
    fixed: Config,
    ok: Counter,
    rejected: Counter,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Reloads `router`, served by `gateway`, with `app` over what `load` gives.
    pub fn new(gateway: &Gateway, app: MakeApp, router: ReloadableApp, load: Load) -> Self {
        let metrics = gateway.metrics().clone();
        let counter = |result: &str| metrics.counter("bff_config_reloads_total", &[("result", result.to_owned())]);
        let (ok, rejected) = (counter("ok"), counter("rejected"));
        let spans = gateway.span_sink().cloned();
        let current = std::sync::Mutex::new(gateway.clone());
        Self { app, load, router, fixed: gateway.config().clone(), metrics, spans, current, ok, rejected }
    }

    /// Loads, checks and builds the configuration again and serves its router; on failure
    /// (logged, counted) the current router keeps serving.
    pub async fn reload(&self) -> Result<(), BuildError> {
        match self.rebuild().await {
            Ok(source) => {
                self.ok.increment(1);
                tracing::info!(config = %source, "configuration reloaded: new requests take the new routes");
                Ok(())
            }
            Err(e) => {
                self.rejected.increment(1);
                tracing::error!(error = %e, "configuration reload refused; still serving the previous routes");
                Err(e)
            }
        }
    }

    async fn rebuild(&self) -> Result<String, BuildError> {
        let (mut config, source) = (self.load)()?;
        let kept = keep_fixed(&mut config, &self.fixed);
        if !kept.is_empty() {
            let keys = kept.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(", ");
            tracing::warn!(keys, "changed but takes a restart: kept as started; the rest is reloaded");
            // A value kept may not fit what changed with it (a deadline the new idle timeout allowed).
            config.validate().map_err(|(key, message)| {
                let message = format!("{message} (with {keys} kept as started until a restart)");
                ConfigError::key(source.clone(), key, message)
            })?;
        }
        let gateway = Gateway::builder(config)
            .source(source.clone())
            .metrics(self.metrics.clone())
            .spans(self.spans.clone())
            .replacing(self.current())
            .build()
            .await?;
        let router = (self.app)(&gateway)?;
        self.router.replace(router);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = gateway;
        Ok(source)
    }

    fn current(&self) -> Gateway {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads on SIGHUP, and when `file` changes (checked every `interval`), for as long as the
    /// returned task runs.
    pub fn watch(self, file: Option<PathBuf>, interval: Duration) -> tokio::task::JoinHandle<()> {
        // Taken now: a change made before the task first runs is a change.
        let mut seen = file.as_deref().map(stamp);
        let mut triggers = Triggers::new(interval);
        tokio::spawn(async move {
            loop {
                let forced = triggers.next().await;
                let now = file.as_deref().map(stamp);
                if forced || now != seen {
                    seen = now;
                    // Refusals are logged and counted by `reload`.
                    let _ = self.reload().await;
                }
            }
        })
    }
}

/// The keys a reload does not change: read when the listeners were opened, or by the span queue.
pub const FIXED: [&str; 19] = [
    "listen",
    "admin",
    "tls",
    "server.header_read_timeout",
    "server.idle_timeout",
    "server.max_connections",
    "server.max_connections_per_ip",
    "server.max_header_bytes",
    "server.max_headers",
    "server.h2_max_concurrent_streams",
    "server.h2_max_unsent_bytes",
    "server.h2_max_send_buf_bytes",
    "server.drain_delay",
    "server.shutdown_grace",
    "tracing.otlp_endpoint",
    "tracing.otlp_traces_endpoint",
    "tracing.service_name",
    "tracing.headers",
    "tracing.queue_size",
];

/// Puts each [`FIXED`] key of `config` back to its value in `started`, and names those that
/// differed, in [`FIXED`]'s order.
fn keep_fixed(config: &mut Config, started: &Config) -> Vec<&'static str> {
    fn keep<T: Clone + serde::Serialize>(now: &mut T, before: &T) -> bool {
        let changed = !carried::same(now, before);
        if changed {
            now.clone_from(before);
        }
        changed
    }
    let (now, before) = (config, started);
    let (s, b) = (&mut now.server, &before.server);
    let server = [
        keep(&mut s.header_read_timeout, &b.header_read_timeout),
        keep(&mut s.idle_timeout, &b.idle_timeout),
        keep(&mut s.max_connections, &b.max_connections),
        keep(&mut s.max_connections_per_ip, &b.max_connections_per_ip),
        keep(&mut s.max_header_bytes, &b.max_header_bytes),
        keep(&mut s.max_headers, &b.max_headers),
        keep(&mut s.h2_max_concurrent_streams, &b.h2_max_concurrent_streams),
        keep(&mut s.h2_max_unsent_bytes, &b.h2_max_unsent_bytes),
        keep(&mut s.h2_max_send_buf_bytes, &b.h2_max_send_buf_bytes),
        keep(&mut s.drain_delay, &b.drain_delay),
        keep(&mut s.shutdown_grace, &b.shutdown_grace),
    ];
    let (t, b) = (&mut now.tracing, &before.tracing);
    let tracing = [
        keep(&mut t.otlp_endpoint, &b.otlp_endpoint),
        keep(&mut t.otlp_traces_endpoint, &b.otlp_traces_endpoint),
        keep(&mut t.service_name, &b.service_name),
        keep(&mut t.headers, &b.headers),
        keep(&mut t.queue_size, &b.queue_size),
    ];
    let listeners = [
        keep(&mut now.listen, &before.listen),
        keep(&mut now.admin, &before.admin),
        keep(&mut now.tls, &before.tls),
    ];
    let changed = listeners.into_iter().chain(server).chain(tracing);
    FIXED.into_iter().zip(changed).filter_map(|(key, changed)| changed.then_some(key)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Overrides, load};

    fn config(extra: &str) -> Config {
        let text = format!("listen = \"127.0.0.1:8080\"\n[upstreams.users]\nurl = \"http://127.0.0.1:1\"\n{extra}");
        load(&ConfigSource { name: "t.toml".into(), text }, &Overrides::default()).unwrap()
    }

    #[test]
    fn a_reload_keeps_each_fixed_key_as_started_and_names_it() {
        let started = config("");
        let mut same = config("[routes.\"/a\"]\ndeadline = \"3s\"\n");
        assert!(keep_fixed(&mut same, &started).is_empty());

        let every = "[admin]\nlisten = \"127.0.0.1:10\"\n\
            [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
            [server]\nheader_read_timeout = \"3s\"\nidle_timeout = \"2m\"\nmax_connections = 7\n\
            max_connections_per_ip = 2\nmax_header_bytes = 9000\nmax_headers = 9\n\
            h2_max_concurrent_streams = 9\nh2_max_unsent_bytes = 9\nh2_max_send_buf_bytes = 9\n\
            drain_delay = \"9s\"\nshutdown_grace = \"9s\"\n\
            allowed_hosts = [\"bff.test\"]\nmax_uri_bytes = 99\nmax_body_bytes = 99\n\
            max_in_flight_requests = 9\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
            [tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n\
            otlp_traces_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nservice_name = \"s\"\n\
            queue_size = 9\nsample_ratio = 0.5\n[tracing.headers]\nauthorization = \"x\"\n\
            [hsts]\nmax_age = \"1d\"\n";
        let mut changed = config(every);
        changed.listen = "127.0.0.1:9".parse().unwrap();
        assert_eq!(keep_fixed(&mut changed, &started), FIXED);
        // Each fixed key is back as started; what a request reads is as loaded.
        let mut expected = started.clone();
        expected.server.allowed_hosts.clone_from(&changed.server.allowed_hosts);
        expected.server.max_uri_bytes = 99;
        expected.server.max_body_bytes = 99;
        expected.server.max_in_flight_requests = 9;
        expected.server.trusted_proxies.clone_from(&changed.server.trusted_proxies);
        expected.tracing.sample_ratio = 0.5;
        expected.hsts.max_age = std::time::Duration::from_secs(86_400);
        assert!(carried::same(&changed, &expected));
        assert_eq!(changed.server.allowed_hosts.len(), 1);
    }
}
