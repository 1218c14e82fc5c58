//! TLS termination: rustls with `ring`, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN, and the
//! certificate reloaded from disk without a restart.
//!
//! The certificate is read again on SIGHUP and whenever the certificate or key file changes
//! (checked every few seconds): new connections get the new one, connections already open keep
//! theirs. A new pair that cannot be used (unreadable, not PEM, a key that is not the
//! certificate's) is refused with a log line saying why, and the current one stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use super::triggers::{Stamp, Triggers, stamp};

/// How often the certificate and key files are checked for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl TlsError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.display().to_string(), message: message.into() }
    }
}

/// A server certificate from two PEM files, and the acceptor that serves it. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.current.cert).field("key", &self.current.key).finish()
    }
}

/// The certificate in force, and where it comes from.
#[derive(Debug)]
struct Current {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    served: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and lengths when last loaded, to notice a change (the
    /// length too, for file systems with coarse times).
    loaded: RwLock<(Stamp, Stamp)>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Loads the certificate chain (`cert`, PEM) and its private key (`key`, PEM), failing with
    /// the file at fault.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load(cert, key, &provider)?;
        let current = Arc::new(Current {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: provider.clone(),
            served: RwLock::new(Arc::new(certified)),
            loaded: RwLock::new((stamp(cert), stamp(key))),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new(cert, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)), current })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and serves the new pair to new connections; on failure the
    /// current pair stays in force and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let current = &self.current;
        let stamps = (stamp(&current.cert), stamp(&current.key));
        *current.loaded.write().unwrap_or_else(|e| e.into_inner()) = stamps;
        let certified = load(&current.cert, &current.key, &current.provider)?;
        *current.served.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        tracing::info!(cert = %current.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Whether either file changed since it was last loaded.
    fn changed(&self) -> bool {
        let current = &self.current;
        let stamps = (stamp(&current.cert), stamp(&current.key));
        *current.loaded.read().unwrap_or_else(|e| e.into_inner()) != stamps
    }

    /// Reloads on SIGHUP, and when a file changes (checked every `interval`), for as long as
    /// the returned task runs.
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        let mut triggers = Triggers::new(interval);
        tokio::spawn(async move {
            loop {
                let forced = triggers.next().await;
                if (forced || tls.changed())
                    && let Err(e) = tls.reload()
                {
                    tracing::error!(error = %e, "cannot load the new TLS certificate; still serving the previous one");
                }
            }
        })
    }
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| TlsError::new(path, format!("cannot read it: {e}")));
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::new(cert, "no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| TlsError::new(key, format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| TlsError::new(key, format!("cannot be served with the certificate: {e}")))
}
