//! Names the commit being built (`BFF_GIT_SHA`, for `bff_build_info`): the variable when the
//! build sets it (an image built without `.git`), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BFF_GIT_SHA");
    let sha = std::env::var("BFF_GIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let sha = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !sha.is_empty()).then_some(sha)
    });
    // A new commit moves HEAD or the branch it names.
    if let Ok(output) = Command::new("git").args(["rev-parse", "--git-dir"]).output()
        && output.status.success()
        && let Ok(dir) = String::from_utf8(output.stdout)
    {
        let dir = std::path::Path::new(dir.trim());
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Ok(head) = std::fs::read_to_string(dir.join("HEAD"))
            && let Some(branch) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={}", dir.join(branch).display());
        }
    }
    println!("cargo:rustc-env=BFF_GIT_SHA={}", sha.as_deref().unwrap_or("unknown"));
}
