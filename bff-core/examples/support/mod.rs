#![allow(dead_code, reason = "each example uses a part of it")]

//! What the examples' tests share: the mock services, and a BFF served on a free port over them.

use bff_core::cli::{Bff, MakeApp};
use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::{Gateway, GatewayBuilder};
use services_mock::{MockConfig, MockServices};

/// A BFF serving on `127.0.0.1:0` over the mock services, stopped when dropped.
pub(crate) struct Running {
    pub(crate) base: String,
    pub(crate) mocks: MockServices,
    pub(crate) http: reqwest::Client,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Running {
    /// A bearer token from the mock issuer for user `subject` with `scope`.
    pub(crate) fn token(&self, subject: &str, scope: &str) -> String {
        self.mocks.token(subject, scope, 60)
    }
}

/// Starts the mocks, then `app` on the config `text` with its upstreams pointed at them.
pub(crate) async fn start(text: &str, app: MakeApp) -> Running {
    start_with(text, std::convert::identity, app).await
}

/// As [`start`], with what `gateway` adds to the gateway builder.
pub(crate) async fn start_with(text: &str, gateway: fn(GatewayBuilder) -> GatewayBuilder, app: MakeApp) -> Running {
    bff_core::install_crypto_provider();
    let mocks = services_mock::start(&MockConfig::ephemeral()).await.expect("the mock services start");
    let mut overrides = Overrides::default();
    for (key, value) in mocks.config_overrides() {
        overrides.set_existing(key, value, "the example's test");
    }
    overrides.set("listen", "127.0.0.1:0", "the example's test");
    let source = ConfigSource { name: "example.toml".to_owned(), text: text.to_owned() };
    let config = load(&source, &overrides).expect("the example's config loads");
    let builder = gateway(Gateway::builder(config));
    let bff = Bff::bind_with(builder, &source.name, app).await.expect("the example starts");
    let base = format!("http://{}", bff.addr());
    let serving = tokio::spawn(async move {
        let _ = bff.serve(std::future::pending()).await;
    });
    let http = reqwest::Client::builder().no_proxy().build().expect("a client");
    Running { base, mocks, http, serving }
}
