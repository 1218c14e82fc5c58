//! The TLS client settings of one upstream: whom it trusts (the platform's roots, or a CA file of
//! its own) and the certificate it presents, if any (mutual TLS).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::UpstreamTlsConfig;

/// A client config for `tls`, or the config key at fault and why.
pub(crate) fn client_config(name: &str, tls: &UpstreamTlsConfig) -> Result<rustls::ClientConfig, (String, String)> {
    let key_of = |field: &str| format!("upstreams.{name}.tls.{field}");
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let versions = rustls::ClientConfig::builder_with_provider(ring)
        .with_safe_default_protocol_versions()
        .map_err(|e| (key_of("ca"), e.to_string()))?;
    let trusting = match &tls.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca).map_err(|e| (key_of("ca"), e))? {
                roots.add(cert).map_err(|e| (key_of("ca"), format!("{}: {e}", ca.display())))?;
            }
            versions.with_root_certificates(roots)
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            versions.with_platform_verifier().map_err(|e| (key_of("ca"), format!("no platform trust store: {e}")))?
        }
    };
    match (&tls.cert, &tls.key) {
        (None, None) => Ok(trusting.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|e| (key_of("cert"), e))?;
            let private = std::fs::read(key)
                .map_err(|e| format!("{}: cannot read it: {e}", key.display()))
                .and_then(|pem| {
                    PrivateKeyDer::from_pem_slice(&pem)
                        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))
                })
                .map_err(|e| (key_of("key"), e))?;
            trusting
                .with_client_auth_cert(chain, private)
                .map_err(|e| (key_of("key"), format!("{}: cannot be used with the certificate: {e}", key.display())))
        }
        (Some(_), None) => Err((key_of("key"), "a client certificate needs its key".to_owned())),
        (None, Some(_)) => Err((key_of("cert"), "a client key needs its certificate".to_owned())),
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}
