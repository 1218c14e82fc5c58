//! Safe by default: a BFF built as `cargo build --release -p bff-partner` builds links no demo
//! (no mock services, none of their private signing keys, no demo configs).

use std::process::Command;

#[test]
fn the_bff_crates_default_features_link_no_demo() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for bff in ["bff-web", "bff-mobile", "bff-partner"] {
        let output = Command::new(&cargo)
            .args(["tree", "--offline", "--locked", "-p", bff, "-e", "normal,build", "--prefix", "none"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        let tree = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "cargo tree -p {bff}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(tree.contains("bff-core"), "{bff}'s tree is its tree: {tree}");
        for demo in ["services-mock", "bff-demo"] {
            assert!(!tree.lines().any(|line| line.starts_with(demo)), "{bff} links {demo}:\n{tree}");
        }
    }
}
