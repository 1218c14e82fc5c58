//! TLS termination: HTTPS over HTTP/1.1 and HTTP/2 with a test CA, old protocol versions refused,
//! and a certificate swapped on disk served without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bff_core::config::ServerConfig;
use bff_core::serve::{Server, Tls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A test CA and a certificate it issues for `localhost` and 127.0.0.1.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { pem, issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate and its key, PEM.
    fn leaf(&self) -> (String, String) {
        self.leaf_for(&["localhost", "127.0.0.1"])
    }

    /// A leaf certificate for `names` and its key, PEM.
    fn leaf_for(&self, names: &[&str]) -> (String, String) {
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of its own under the system's temporary one, removed (keys and all) when the
/// test ends, however it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("bff-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn write_pair(dir: &std::path::Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

async fn serve_https(tls: Tls) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    bff_core::install_crypto_provider();
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::new(&ServerConfig::default()).tls(Some(tls)).serve(listener, router, rx));
    (addr, tx)
}

/// A client trusting `ca` only, with no pooled connections (each request a new handshake).
fn client(ca: &Ca, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .pool_max_idle_per_host(0);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_over_http1_and_http2_by_alpn() {
    let ca = Ca::new("test ca");
    let dir = scratch("alpn");
    let (cert, key) = write_pair(&dir, &ca.leaf());
    let (addr, _stop) = serve_https(Tls::from_files(&cert, &key).unwrap()).await;
    let url = format!("https://localhost:{}/hello", addr.port());
    for (http1_only, version) in [(false, reqwest::Version::HTTP_2), (true, reqwest::Version::HTTP_11)] {
        let response = client(&ca, addr, http1_only).get(&url).send().await.unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(plain.get(format!("http://127.0.0.1:{}/hello", addr.port())).send().await.is_err());
}

/// A TLS 1.1 ClientHello: record version 3.1, client version 3.2, one cipher suite, no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(hello.len()).unwrap()];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, u8::try_from(handshake.len()).unwrap()];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn a_tls_1_1_client_is_refused() {
    let ca = Ca::new("test ca");
    let dir = scratch("tls11");
    let (cert, key) = write_pair(&dir, &ca.leaf());
    let (addr, _stop) = serve_https(Tls::from_files(&cert, &key).unwrap()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap_or(0);
    // An alert record (21), or the connection closed: never a ServerHello (22).
    assert!(n == 0 || answer[0] == 0x15, "answered {:?}", &answer[..n]);
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_without_a_restart() {
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let dir = scratch("swap");
    let (cert, key) = write_pair(&dir, &old_ca.leaf());
    let tls = Tls::from_files(&cert, &key).unwrap();
    let (addr, _stop) = serve_https(tls.clone()).await;
    let url = format!("https://localhost:{}/hello", addr.port());
    assert!(client(&old_ca, addr, false).get(&url).send().await.is_ok());
    assert!(client(&new_ca, addr, false).get(&url).send().await.is_err());

    // A broken file is refused, naming it, and the old certificate stays in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    let error = tls.reload().unwrap_err();
    assert!(error.to_string().contains("cert.pem"), "{error}");
    assert!(client(&old_ca, addr, false).get(&url).send().await.is_ok());

    // The new pair, noticed by the file watch, is served to the next connections.
    let watch = tls.watch(Duration::from_millis(50));
    write_pair(&dir, &new_ca.leaf());
    let swapped = {
        let mut served = false;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !served && tokio::time::Instant::now() < give_up {
            tick.tick().await;
            served = client(&new_ca, addr, false).get(&url).send().await.is_ok();
        }
        served
    };
    watch.abort();
    assert!(swapped, "the new certificate was not served");
    assert!(client(&old_ca, addr, false).get(&url).send().await.is_err());
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_at_start() {
    let ca = Ca::new("test ca");
    let dir = scratch("mismatch");
    let (cert, _) = write_pair(&dir, &ca.leaf());
    let other_key = dir.join("other.pem");
    std::fs::write(&other_key, ca.leaf().1).unwrap();
    let error = Tls::from_files(&cert, &other_key).unwrap_err();
    assert!(error.to_string().contains("other.pem"), "{error}");
    let error = Tls::from_files(&dir.join("missing.pem"), &other_key).unwrap_err();
    assert!(error.to_string().contains("missing.pem") && error.to_string().contains("cannot read"), "{error}");
}

/// An HTTPS upstream on 127.0.0.1 that requires a client certificate issued by `client_ca`,
/// answering `{"hello":"mtls"}` to anything.
async fn mtls_upstream(server_ca: &Ca, client_ca: &Ca) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    bff_core::install_crypto_provider();
    let (cert, key) = server_ca.leaf();
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(client_ca.pem.as_bytes()).unwrap()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots)).build().unwrap();
    let config =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"hello":"mtls"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

async fn gateway_with(config: String) -> Result<bff_core::Gateway, bff_core::BuildError> {
    let source = bff_core::config::ConfigSource { name: "test".into(), text: config };
    let config = bff_core::config::load(&source, &bff_core::config::Overrides::default()).unwrap();
    bff_core::Gateway::builder(config).build().await
}

#[tokio::test]
async fn an_upstream_with_its_own_ca_and_a_client_certificate() {
    let (server_ca, client_ca) = (Ca::new("upstream ca"), Ca::new("client ca"));
    let addr = mtls_upstream(&server_ca, &client_ca).await;
    let dir = scratch("mtls");
    std::fs::write(dir.join("ca.pem"), &server_ca.pem).unwrap();
    let (client_cert, client_key) = write_pair(&dir, &client_ca.leaf());
    let section = |tls: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[upstreams.secure]\nurl = \"https://127.0.0.1:{}\"\n[upstreams.secure.tls]\n{tls}\n",
            addr.port()
        )
    };
    let ca_line = format!("ca = {:?}", dir.join("ca.pem"));
    let call = |gateway: bff_core::Gateway| async move {
        let up = gateway.upstream("secure").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        up.get::<serde_json::Value>("/hello").send_within(http::HeaderValue::from_static("mtls-1"), deadline).await
    };
    // Its own CA and a client certificate: the call goes through.
    let full = format!("{ca_line}\ncert = {client_cert:?}\nkey = {client_key:?}");
    let answer = call(gateway_with(section(&full)).await.unwrap()).await.unwrap();
    assert_eq!(answer["hello"], "mtls");
    // Without the client certificate the upstream refuses the handshake.
    assert!(call(gateway_with(section(&ca_line)).await.unwrap()).await.is_err());
    // Without its CA the platform's roots do not trust the upstream.
    let no_ca = format!("cert = {client_cert:?}\nkey = {client_key:?}");
    assert!(call(gateway_with(section(&no_ca)).await.unwrap()).await.is_err());
    // A certificate without its key is a config error naming the key.
    let error = gateway_with(section(&format!("{ca_line}\ncert = {client_cert:?}"))).await.unwrap_err();
    assert!(error.to_string().contains("upstreams.secure.tls.key"), "{error}");
    let error = gateway_with(section(&format!("ca = {:?}", dir.join("nope.pem")))).await.unwrap_err();
    assert!(error.to_string().contains("upstreams.secure.tls.ca") && error.to_string().contains("nope.pem"), "{error}");
}

/// A BFF that serves TLS tells browsers to keep to HTTPS: `Strict-Transport-Security` on every
/// answer for its name, a route's and a refusal's, over HTTP/2 and HTTP/1.1, as `[hsts]` says;
/// never for `localhost` or an address, and none with `enabled = false`.
#[tokio::test]
async fn a_bff_serving_tls_tells_browsers_to_keep_to_https() {
    bff_core::install_crypto_provider();
    let ca = Ca::new("hsts ca");
    let dir = scratch("hsts");
    let (cert, key) = write_pair(&dir, &ca.leaf_for(&["bff.test", "localhost", "127.0.0.1"]));
    let serve = |hsts: &'static str| {
        let config = format!("listen = \"127.0.0.1:0\"\n{hsts}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n");
        async move {
            let gateway = gateway_with(config).await.unwrap();
            let hello = bff_core::routing::get(|| async { "hello" });
            let routes = bff_core::Routes::new().route("/hello", hello, bff_core::Access::public());
            let router = gateway.router(routes).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<bff_core::Signal>();
            let shutdown = async move { stopped.await.unwrap_or(bff_core::Signal::Interrupt) };
            tokio::spawn(async move { gateway.serve(listener, None, router, shutdown).await });
            (addr, stop)
        }
    };
    let hsts_of = |addr: SocketAddr, host: &'static str, path: &'static str, http1_only: bool| {
        let ca = &ca;
        async move {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
                .resolve(host, addr);
            if http1_only {
                builder = builder.http1_only();
            }
            let url = format!("https://{host}:{}{path}", addr.port());
            let response = builder.build().unwrap().get(url).send().await.unwrap();
            let value = response.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned());
            (response.status().as_u16(), value)
        }
    };
    let year = Some("max-age=31536000".to_owned());
    let (addr, _stop) = serve("").await;
    for http1_only in [false, true] {
        assert_eq!(hsts_of(addr, "bff.test", "/hello", http1_only).await, (200, year.clone()));
        assert_eq!(hsts_of(addr, "bff.test", "/nope", http1_only).await, (404, year.clone()));
        assert_eq!(hsts_of(addr, "localhost", "/hello", http1_only).await, (200, None));
    }
    let by_address = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let response = by_address.get(format!("https://127.0.0.1:{}/hello", addr.port())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("strict-transport-security").is_none());
    let (addr, _stop) = serve("[hsts]\nmax_age = \"730d\"\ninclude_subdomains = true\npreload = true").await;
    let two_years = Some("max-age=63072000; includeSubDomains; preload".to_owned());
    assert_eq!(hsts_of(addr, "bff.test", "/hello", false).await, (200, two_years));
    let (addr, _stop) = serve("[hsts]\nenabled = false").await;
    assert_eq!(hsts_of(addr, "bff.test", "/hello", false).await, (200, None));
    // Preloading asks for a year and every subdomain, or the BFF does not start.
    let error = config_of("listen = \"127.0.0.1:0\"\n[hsts]\npreload = true\n").unwrap_err();
    assert!(error.contains("hsts.preload") && error.contains("include_subdomains"), "{error}");
}

/// The configuration `text` loads as, or the loader's message.
fn config_of(text: &str) -> Result<bff_core::config::Config, String> {
    let source = bff_core::config::ConfigSource { name: "test".into(), text: text.to_owned() };
    bff_core::config::load(&source, &bff_core::config::Overrides::default()).map_err(|e| e.to_string())
}
