//! Two `bff-partner` processes behind one Redis share one quota, as replicas behind a load
//! balancer must: each counting alone would let through twice the quota.

use std::process::Stdio;
use std::time::Duration;

use bff_core::testing::RedisServer;
use services_mock::{MockConfig, MockServices};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// A running `bff-partner` and the address it listens on.
struct Replica {
    _child: Child,
    addr: String,
}

/// Starts `bff-partner` on a free port against `mocks`, counting in `redis`, with a free tier
/// of `quota` requests a day; returns once it listens.
async fn replica(mocks: &MockServices, redis: &RedisServer, quota: u64) -> Replica {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bff-partner"));
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/partner.toml");
    command.args(["--config", config, "--listen", "127.0.0.1:0", "--log-format", "json"]);
    for (key, value) in mocks.config_overrides() {
        if key.starts_with("upstreams.") {
            command.env(format!("BFF_{}", key.to_uppercase().replace('.', "__")), value);
        }
    }
    command
        .env("BFF_ADMIN__LISTEN", "127.0.0.1:0")
        .env("BFF_REDIS__URL", redis.url())
        .env("BFF_QUOTAS__FREE__REQUESTS", quota.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("bff-partner starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let listening = async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if entry["message"] == "listening" {
                return entry["addr"].as_str().expect("the address").to_owned();
            }
        }
        panic!("bff-partner exited before it listened");
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), listening).await.expect("listening within 60 s");
    // The log goes on: keep reading it, so a full pipe never blocks the process.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Replica { _child: child, addr }
}

#[tokio::test]
async fn two_replicas_share_one_quota_through_redis() {
    let Some(redis) = RedisServer::start().await else { return };
    bff_core::install_crypto_provider();
    let mocks = services_mock::start(&MockConfig::ephemeral()).await.expect("mocks");
    let replicas = [replica(&mocks, &redis, 100).await, replica(&mocks, &redis, 100).await];
    assert_ne!(replicas[0].addr, replicas[1].addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (mut passed, mut spent) = (0, 0);
    for i in 0..150 {
        let replica = &replicas[i % 2];
        let url = format!("http://{}/v2/orders?user=42", replica.addr);
        let response = http.get(url).header("x-api-key", "demo-free-key").send().await.unwrap();
        match response.status().as_u16() {
            200 => passed += 1,
            429 => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["code"], "QUOTA_EXCEEDED", "{body}");
                spent += 1;
            }
            other => panic!("request {i}: {other}"),
        }
    }
    assert_eq!((passed, spent), (100, 50));
}
