//! Reloading bff-web's routes without a restart: a route added to the `--config` file answers
//! once the file changes (or on SIGHUP) while a download started before finishes on the old
//! table; a broken file is refused, naming the key, and the old table keeps serving.
//!
//! One test in its own binary: it sends SIGHUP to the process.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::reload::{Load, Reloader};
use bff_core::serve::{ReloadableApp, Server};
use bff_core::testing::TestServer;
use futures::StreamExt;
use services_mock::MockConfig;

/// A route the shipped config does not have.
const MORE: &str = "\n[[proxy]]\npath = \"/api/more/{*rest}\"\nupstream = \"catalog\"\nrewrite = \"/products/{rest}\"\naccess = \"public\"\n";

/// The config file's text, read as `--config` is, with the mocks' addresses set over it.
fn loader(path: PathBuf, mocks: Vec<(String, String)>) -> Load {
    Box::new(move || {
        let text = std::fs::read_to_string(&path).expect("the config file");
        let source = ConfigSource { name: path.display().to_string(), text };
        let mut overrides = Overrides::default();
        for (key, value) in &mocks {
            overrides.set_existing(key.clone(), value.clone(), "mocks");
        }
        Ok((load(&source, &overrides)?, source.name))
    })
}

#[tokio::test]
async fn routes_reload_from_the_file_and_on_sighup_and_a_broken_file_changes_nothing() {
    bff_core::install_crypto_provider();
    let mocks = services_mock::start(&MockConfig::ephemeral()).await.expect("mocks");
    let dir = std::env::temp_dir().join(format!("bff-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("web.toml");
    std::fs::write(&path, bff_demo::WEB_CONFIG).unwrap();
    let load = loader(path.clone(), mocks.config_overrides());
    let (config, source) = load().unwrap();
    let gateway = bff_core::Gateway::builder(config).source(source).build().await.unwrap();
    let router = ReloadableApp::new(bff_web::app(&gateway).unwrap());
    let bff = TestServer::serve(Server::new(&gateway.config().server), router.clone()).await;
    let reloader = Reloader::new(&gateway, bff_web::app, router.clone(), load);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |path: &'static str| {
        let (http, url) = (http.clone(), bff.url(path));
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/api/more/SKU-0001").await, 404);

    // A download that outlives the reload: four chunks, a second apart.
    let download = http.get(bff.url("/api/catalog/files/262144?chunk_delay_ms=1000")).send().await.unwrap();
    let mut body = download.bytes_stream();
    let mut received = body.next().await.unwrap().unwrap().len();

    // The file changes: the watcher, checking often, picks it up.
    let file_loader = loader(path.clone(), mocks.config_overrides());
    let watching = Reloader::new(&gateway, bff_web::app, router.clone(), file_loader)
        .watch(Some(path.clone()), Duration::from_millis(20));
    std::fs::write(&path, format!("{}{MORE}", bff_demo::WEB_CONFIG)).unwrap();
    let added =
        common::eventually(Duration::from_secs(30), || async { status("/api/more/SKU-0001").await == 200 }).await;
    assert!(added, "the new route never answered");
    while let Some(chunk) = body.next().await {
        received += chunk.expect("the download finishes on the old table").len();
    }
    assert_eq!(received, 262_144);
    watching.abort();

    // A broken file: refused, naming the key; the table in force keeps serving.
    std::fs::write(&path, format!("{}{}", bff_demo::WEB_CONFIG, MORE.replace("\"catalog\"", "\"catalogue\""))).unwrap();
    let error = reloader.reload().await.expect_err("a route to an unknown upstream").to_string();
    let added = bff_demo::WEB_CONFIG.matches("[[proxy]]").count();
    assert!(error.contains(&format!("proxy[{added}].upstream")) && error.contains("catalogue"), "{error}");
    assert_eq!(status("/api/more/SKU-0001").await, 200);
    assert_eq!(status("/api/catalog/products/SKU-0001").await, 200);

    // SIGHUP: the file as shipped again, without the extra route.
    std::fs::write(&path, bff_demo::WEB_CONFIG).unwrap();
    let watching = reloader.watch(None, Duration::from_secs(3600));
    // Sent until it is seen: the watcher's handler may not be listening yet (the process's is,
    // since the first watcher).
    let pid = std::process::id().to_string();
    let removed = common::eventually(Duration::from_secs(30), || {
        let pid = pid.clone();
        let status = status("/api/more/SKU-0001");
        async move {
            // The shell's own `kill`: no procps needed.
            let _ = std::process::Command::new("sh").args(["-c", &format!("kill -HUP {pid}")]).status();
            status.await == 404
        }
    })
    .await;
    assert!(removed, "SIGHUP did not reload");
    watching.abort();
    let metrics = gateway.metrics().render();
    assert!(metrics.contains(r#"bff_config_reloads_total{result="rejected"} 1"#), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}
