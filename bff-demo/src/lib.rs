//! The `--demo` flag every BFF binary takes: start the mock services in-process on free ports,
//! point every upstream (and the JWKS) at them, and print a `curl` line with a valid credential.
//!
//! The mocks and their private signing keys are linked only with the `mocks` feature (on through
//! each BFF's default `demo` feature); without it `--demo` says how to get a build that has it.

use bff_core::cli::{Extension, Spec, Startup};

/// The `--demo` flag.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Demo {
    /// Start the mock services in-process on free ports and point every upstream at them.
    #[arg(long)]
    pub demo: bool,
}

impl Extension for Demo {
    async fn start(&self, spec: &Spec) -> Result<Option<Startup>, String> {
        if !self.demo {
            return Ok(None);
        }
        start(spec).await.map(Some)
    }
}

#[cfg(feature = "mocks")]
async fn start(spec: &Spec) -> Result<Startup, String> {
    use bff_core::cli::ExampleCredential;

    let mocks = services_mock::start(&services_mock::MockConfig::ephemeral())
        .await
        .map_err(|e| format!("cannot start the demo services: {e}"))?;
    let credential = match spec.example.credential {
        ExampleCredential::Bearer { subject, scope } => {
            format!("Authorization: Bearer {}", mocks.token(subject, scope, 3600))
        }
        ExampleCredential::ApiKey { header, key } => format!("{header}: {key}"),
    };
    let (name, path) = (spec.name, spec.example.path);
    Ok(Startup {
        overrides: mocks.config_overrides(),
        banner: Box::new(move |addr| {
            format!(
                "\n{name} is running with demo upstreams. Try:\n\n  curl -s -H '{credential}' 'http://{addr}{path}'\n"
            )
        }),
        keep_alive: Box::new(mocks),
    })
}

#[cfg(not(feature = "mocks"))]
async fn start(spec: &Spec) -> Result<Startup, String> {
    Err(format!(
        "this build has no demo services (it was built without the `demo` feature); \
         build one with them: cargo build --release -p {}",
        spec.name
    ))
}

#[cfg(test)]
mod tests {
    use bff_core::cli::{Example, ExampleCredential};

    use super::*;

    const SPEC: Spec = Spec {
        name: "bff-test",
        about: "",
        default_config_name: "config/test.toml",
        default_config: "",
        example: Example { path: "/x", credential: ExampleCredential::ApiKey { header: "X-Api-Key", key: "k" } },
    };

    #[tokio::test]
    async fn without_the_flag_nothing_starts() {
        assert!(Demo { demo: false }.start(&SPEC).await.unwrap().is_none());
    }

    #[cfg(feature = "mocks")]
    #[tokio::test]
    async fn the_flag_starts_the_mocks_and_points_the_upstreams_at_them() {
        let startup = Demo { demo: true }.start(&SPEC).await.unwrap().unwrap();
        let users = startup.overrides.iter().find(|(key, _)| key == "upstreams.users.url").unwrap();
        assert!(users.1.starts_with("http://127.0.0.1:"), "{users:?}");
        let banner = (startup.banner)("127.0.0.1:8082".parse().unwrap());
        assert!(banner.contains("curl -s -H 'X-Api-Key: k' 'http://127.0.0.1:8082/x'"), "{banner}");
    }

    #[cfg(not(feature = "mocks"))]
    #[tokio::test]
    async fn a_build_without_the_mocks_says_how_to_get_them() {
        let error = Demo { demo: true }.start(&SPEC).await.err().unwrap();
        assert!(error.contains("`demo` feature") && error.contains("cargo build --release -p bff-test"), "{error}");
    }
}
