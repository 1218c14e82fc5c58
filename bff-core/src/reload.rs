//! Reloading a BFF's routes without a restart: on SIGHUP, and when its `--config` file changes,
//! the configuration is loaded and checked again, a new [`Gateway`] (upstreams, policies,
//! passthrough routes) and router are built from it, and the served [`ReloadableApp`] is
//! replaced. Requests in flight finish on the router they started on. A configuration that
//! fails is refused with one log line naming the key, and the previous router keeps serving.
//!
//! What the listeners were opened with (`listen`, `admin`, `tls`, `server`) is not reloaded: a
//! change there is logged as needing a restart (TLS certificates reload on their own). Nor is
//! span export (`tracing.otlp_endpoint`, `service_name`, `headers`, `queue_size`): its queue is
//! the process's; `tracing.sample_ratio` and `accept_parent` are reloaded.
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
        let (config, source) = (self.load)()?;
        self.warn_fixed(&config);
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

    /// Logs each key that changed but takes a restart.
    fn warn_fixed(&self, config: &Config) {
        let before = &self.fixed;
        if !carried::same(
            &(&config.listen, &config.admin, &config.tls, &config.server),
            &(&before.listen, &before.admin, &before.tls, &before.server),
        ) {
            tracing::warn!("`listen`, `admin`, `tls` or `server` changed: that takes a restart; the rest is reloaded");
        }
        if !config.tracing.same_export(&self.fixed.tracing) {
            tracing::warn!(
                "`tracing.otlp_endpoint`, `service_name`, `headers` or `queue_size` changed: that takes a restart"
            );
        }
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
