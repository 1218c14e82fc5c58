//! `--print-config` and `--check-config`, run as an operator runs them.

use bff_core::testing::binary::run;

const BINARY: &str = env!("CARGO_BIN_EXE_bff-partner");
const DEV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/partner.toml");

#[test]
fn print_config_shows_file_variables_flags_and_defaults_with_secrets_redacted() {
    let printed = run(BINARY, &["--config", DEV_CONFIG, "--listen", "127.0.0.1:9999", "--print-config"]);
    assert_eq!(printed.code, Some(0), "{printed:?}");
    let text = &printed.stdout;
    assert!(text.contains("listen = \"127.0.0.1:9999\""), "the flag wins: {text}");
    assert!(text.contains("[api_keys.clients.demo-pro]") && text.contains("key_sha256 = \"<redacted>\""), "{text}");
    assert!(!text.contains("1fbfd5e2a34698deb796eb78add256a067ec065519b8329b1eb85f5e2ef906d4"), "a key hash: {text}");
    assert!(text.contains("idle_timeout = \"1m\"") || text.contains("idle_timeout = \"60s\""), "a default: {text}");
}

#[test]
fn check_config_says_whether_it_would_start_and_names_the_key_at_fault() {
    let fine = run(BINARY, &["--config", DEV_CONFIG, "--check-config"]);
    assert_eq!(fine.code, Some(0), "{fine:?}");
    assert!(fine.stdout.contains("partner.toml is a configuration it can start with"), "{fine:?}");

    let dir = std::env::temp_dir().join(format!("bff-partner-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    let text = std::fs::read_to_string(DEV_CONFIG).unwrap().replace("[upstreams.orders]", "[upstreams.ordres]");
    std::fs::write(&broken, text).unwrap();
    let refused = run(BINARY, &["--config", broken.to_str().unwrap(), "--check-config"]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("orders"), "names the upstream the routes need: {}", refused.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}
