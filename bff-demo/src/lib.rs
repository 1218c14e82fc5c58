//! `bff-demo`: the whole demo in one process. The mock services start on free ports, and the web,
//! mobile and partner BFFs start on their local-development configs, pointed at the mocks; then
//! a `curl` line per BFF, with a valid credential, says what to try.
//!
//! This crate is the only one that holds what a demo needs and a production build must not: the
//! local-development configs (mock ports, the demo partner keys' hashes), the mock services and
//! their private signing keys. The BFF crates link none of it.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let demo = bff_demo::Demo::start(bff_demo::Options::default()).await?;
//! println!("{}", demo.banner());
//! demo.serve(bff_core::shutdown_signal()).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;

use bff_core::Signal;
use bff_core::cli::{Bff, MakeApp};
use bff_core::config::{ConfigSource, Overrides, load};
use futures::FutureExt;
use services_mock::{MockConfig, MockServices};

/// `config/web.toml`: the web BFF's local-development config (the mocks' default ports).
pub const WEB_CONFIG: &str = include_str!("../../config/web.toml");
/// `config/mobile.toml`: the mobile BFF's local-development config.
pub const MOBILE_CONFIG: &str = include_str!("../../config/mobile.toml");
/// `config/partner.toml`: the partner BFF's local-development config, with the demo keys'
/// hashes.
pub const PARTNER_CONFIG: &str = include_str!("../../config/partner.toml");

/// The demo partner key of the pro tier (`config/partner.toml` holds its hash; its account holds
/// users 1–100).
pub const PARTNER_PRO_KEY: &str = "demo-pro-key";
/// The demo partner key of the free tier.
pub const PARTNER_FREE_KEY: &str = "demo-free-key";

/// How long the printed tokens are valid, in seconds.
const TOKEN_TTL_S: i64 = 3600;

/// What a new user is shown to try on one BFF, and as whom.
#[derive(Debug, Clone, Copy)]
enum Credential {
    /// A bearer token from the mock issuer for the demo user.
    Bearer { subject: &'static str, scope: &'static str },
    /// An API key in a header.
    ApiKey { header: &'static str, key: &'static str },
}

/// One BFF of the demo.
struct Member {
    name: &'static str,
    config_name: &'static str,
    config: &'static str,
    app: MakeApp,
    try_path: &'static str,
    credential: Credential,
}

const DEMO_USER: Credential = Credential::Bearer { subject: "42", scope: "profile orders" };

fn members() -> [Member; 3] {
    [
        Member {
            name: "bff-web",
            config_name: "config/web.toml",
            config: WEB_CONFIG,
            app: bff_web::app,
            try_path: "/web/home",
            credential: DEMO_USER,
        },
        Member {
            name: "bff-mobile",
            config_name: "config/mobile.toml",
            config: MOBILE_CONFIG,
            app: bff_mobile::app,
            try_path: "/mobile/home",
            credential: DEMO_USER,
        },
        Member {
            name: "bff-partner",
            config_name: "config/partner.toml",
            config: PARTNER_CONFIG,
            app: bff_partner::app,
            try_path: "/v2/orders?user=42",
            credential: Credential::ApiKey { header: "X-Api-Key", key: PARTNER_PRO_KEY },
        },
    ]
}

/// How the demo listens.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Options {
    /// Every BFF and admin listener on a free port of 127.0.0.1, instead of the configs'
    /// 8080–8082 and 9080–9082 (the banner says which).
    pub any_port: bool,
}

impl Options {
    /// Listens on free ports (see [`Options::any_port`]).
    pub fn any_port(mut self, yes: bool) -> Self {
        self.any_port = yes;
        self
    }
}

/// The mocks and the three BFFs, started and listening.
pub struct Demo {
    mocks: MockServices,
    bffs: Vec<Started>,
}

struct Started {
    name: &'static str,
    bff: Bff,
    try_line: String,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo").field("bffs", &self.bffs.iter().map(|s| s.name).collect::<Vec<_>>()).finish()
    }
}

impl Demo {
    /// Starts the mock services on free ports, then each BFF on its local-development config
    /// with every upstream (and the JWKS) pointed at them. Must run inside a Tokio runtime.
    pub async fn start(options: Options) -> Result<Self, String> {
        bff_core::install_crypto_provider();
        let mocks = services_mock::start(&MockConfig::ephemeral())
            .await
            .map_err(|e| format!("cannot start the mock services: {e}"))?;
        let mut bffs = Vec::new();
        for member in members() {
            let mut overrides = Overrides::default();
            for (key, value) in mocks.config_overrides() {
                overrides.set_existing(key, value, "bff-demo's mock services");
            }
            if options.any_port {
                overrides.set("listen", "127.0.0.1:0", "--any-port");
                overrides.set_existing("admin.listen", "127.0.0.1:0", "--any-port");
            }
            let source = ConfigSource { name: member.config_name.to_owned(), text: member.config.to_owned() };
            let config = load(&source, &overrides).map_err(|e| format!("{}: {e}", member.name))?;
            let bff = Bff::bind(config, member.config_name, member.app)
                .await
                .map_err(|e| format!("{}: {e}{}", member.name, hint(options)))?;
            if member.name == "bff-web" {
                // The demo provider sends browsers back to this BFF, under either local name.
                let client = services_mock::services::oidc::DEMO_CLIENT_ID;
                mocks.idp().register_origin(client, &format!("http://{}", bff.addr()));
                mocks.idp().register_origin(client, &format!("http://localhost:{}", bff.addr().port()));
            }
            let try_line = try_line(&mocks, &member, bff.addr());
            bffs.push(Started { name: member.name, bff, try_line });
        }
        Ok(Self { mocks, bffs })
    }

    /// Where each BFF listens, and a `curl` line per BFF with a valid credential.
    pub fn banner(&self) -> String {
        let mut text = String::from("\nThe demo is running: the mock services and three BFFs on them.\n\n");
        for started in &self.bffs {
            let admin = started.bff.admin_addr().map(|a| format!("   admin http://{a} (/metrics, /readyz)"));
            text += &format!("  {:<12} http://{}{}\n", started.name, started.bff.addr(), admin.unwrap_or_default());
        }
        if let Some(web) = self.bffs.iter().find(|s| s.name == "bff-web") {
            let addr = web.bff.addr();
            text += &format!(
                "\nThe web app: open http://{addr}/ (or http://localhost:{}/) in a browser and sign in as a \
                 demo user at the mock identity provider.\n",
                addr.port()
            );
        }
        text += "\nTry:\n\n";
        for started in &self.bffs {
            text += &format!("  {}\n", started.try_line);
        }
        text += &format!(
            "\nThe tokens are user 42's, valid for {} minutes; the partner key's account holds users \
             1-100 ({PARTNER_FREE_KEY} is the free tier's). Ctrl-C stops everything.\n",
            TOKEN_TTL_S / 60
        );
        text
    }

    /// Serves every BFF until `shutdown` completes, then drains them together.
    pub async fn serve(self, shutdown: impl Future<Output = Signal> + Send + 'static) -> Result<(), String> {
        let shutdown = shutdown.boxed().shared();
        let serving = self.bffs.into_iter().map(|started| {
            let name = started.name;
            let shutdown = shutdown.clone();
            async move { started.bff.serve(shutdown).await.map_err(|e| format!("{name}: server error: {e}")) }
        });
        let results = futures::future::join_all(serving).await;
        drop(self.mocks);
        results.into_iter().collect()
    }
}

/// What to do when a port is taken.
fn hint(options: Options) -> &'static str {
    if options.any_port { "" } else { " (is another demo running? --any-port uses free ports)" }
}

fn try_line(mocks: &MockServices, member: &Member, addr: SocketAddr) -> String {
    let header = match member.credential {
        Credential::Bearer { subject, scope } => {
            format!("Authorization: Bearer {}", mocks.token(subject, scope, TOKEN_TTL_S))
        }
        Credential::ApiKey { header, key } => format!("{header}: {key}"),
    };
    format!("curl -s -H '{header}' 'http://{addr}{}'", member.try_path)
}
