//! The innermost outbound step: one HTTP exchange over a pooled connection (HTTP/1.1, or HTTP/2
//! per the upstream's `protocol`).
//!
//! hyper's connections in a pool of ours ([`pool`]), not reqwest or hyper-util's pooled client:
//! the scheme and authority are parsed at start-up, `Host` is built once, and a call hashes no
//! pool key; the general-purpose clients cost more per call (`bench/README.md`).

mod connect;
mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use super::outgoing::ReadAsStream;
use super::{Body, BoxError, UpstreamError, UpstreamErrorKind, UpstreamSettings};
use crate::body::{self, Collect, CollectError};
use crate::config::{HttpUrl, UpstreamProtocol};

/// The largest upstream body read into memory; a larger one fails the call as a transport error.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often an HTTP/2 connection is pinged, busy or idle, and how long the answer may take before
/// the connection fails and the next call opens a new one. Every call to an upstream shares that
/// one connection: a dead one (a peer gone without a FIN, a NAT that dropped the flow) would
/// otherwise take every call down to its timeout, for as long as the pool keeps it. Pinging while
/// idle also keeps NATs and load balancers from dropping a quiet connection.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a request to one base URL and answers its response, the body read whole unless the
/// request is marked [`ReadAsStream`]. Any status is an answer; deciding on it is the
/// caller's business.
#[derive(Clone)]
pub(crate) struct HttpTransport(Arc<Transport>);

struct Transport {
    name: Arc<str>,
    /// The base URL's path without a trailing `/`, prefixed to every call's path.
    base_path: Arc<str>,
    /// `Host`, built once (the client would format it on every request).
    host: Option<HeaderValue>,
    pool: Arc<pool::Pool>,
}

impl HttpTransport {
    /// A transport to `base` with its own connection pool. `base` must be an `http` or `https` URL
    /// with a host (config loading checks this).
    pub(crate) fn new(name: Arc<str>, base: &HttpUrl, settings: &UpstreamSettings) -> Self {
        let tls = settings.tls.as_deref().unwrap_or_else(|| tls_config()).clone();
        Self::with_tls(name, base, settings, tls)
    }

    /// As [`HttpTransport::new`], trusting what `tls` trusts (tests use their own CA).
    fn with_tls(name: Arc<str>, base: &HttpUrl, settings: &UpstreamSettings, tls: rustls::ClientConfig) -> Self {
        let (scheme, authority) = (base.scheme().clone(), base.authority().clone());
        let base_path = Arc::from(base.path().trim_end_matches('/'));
        let host = base.host_str().and_then(|host| match base.port() {
            Some(port) => HeaderValue::try_from(format!("{host}:{port}")).ok(),
            None => HeaderValue::try_from(host).ok(),
        });
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.enforce_http(false);
        let tcp = connect::Quiet(http);
        // ALPN offers what the protocol allows; over plain TCP the client's own setting decides.
        let tls = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let https = match settings.protocol {
            UpstreamProtocol::Http1 => tls.enable_http1().wrap_connector(tcp),
            UpstreamProtocol::Http2 => tls.enable_http2().wrap_connector(tcp),
            UpstreamProtocol::Auto => tls.enable_all_versions().wrap_connector(tcp),
        };
        let options = pool::Options {
            protocol: settings.protocol,
            max_idle: settings.pool_max_idle,
            max_open: settings.pool_max_connections,
            idle_timeout: POOL_IDLE_TIMEOUT,
            ping_interval: H2_PING_INTERVAL,
            ping_timeout: H2_PING_TIMEOUT,
        };
        let pool = Arc::new(pool::Pool::new(connect::Slim(https), scheme, authority, &options));
        Self(Arc::new(Transport { name, base_path, host, pool }))
    }
}

impl Transport {
    fn fail(&self, kind: UpstreamErrorKind, cause: &dyn std::fmt::Display) -> UpstreamError {
        UpstreamError::new(self.name.clone(), kind).with_cause(cause)
    }

    /// Starts the exchange: the URI and `Host` completed, the request handed to the pool.
    fn start(self: &Arc<Self>, mut request: Request<Body>) -> Exchange {
        let uri = match self.uri(std::mem::take(request.uri_mut())) {
            Ok(uri) => uri,
            Err(e) => {
                let error = self.fail(UpstreamErrorKind::Request, &e);
                return Exchange { transport: self.clone(), state: State::Failed(Some(error)) };
            }
        };
        *request.uri_mut() = uri;
        if let Some(host) = &self.host {
            request.headers_mut().insert(HOST, host.clone());
        }
        let streamed = request.extensions().get::<ReadAsStream>().is_some();
        let state = State::Sending { response: self.pool.send(request), streamed };
        Exchange { transport: self.clone(), state }
    }

    fn failed_request(&self, failure: pool::Failure) -> UpstreamError {
        match failure {
            pool::Failure::Connect(e) => self.fail(UpstreamErrorKind::Connect, &ErrorChain(&*e)),
            pool::Failure::Send { error, unsent, .. } => {
                let failed = self.fail(UpstreamErrorKind::Transport, &ErrorChain(&error));
                // A request never written, or one the server refused unprocessed, may go again.
                if unsent.is_some() || refused_unprocessed(&error) { failed.unprocessed() } else { failed }
            }
        }
    }

    fn failed_body(&self, e: CollectError<hyper::Error>) -> UpstreamError {
        match e {
            CollectError::Read(e) => self.fail(UpstreamErrorKind::Transport, &ErrorChain(&e)),
            too_large => self.fail(UpstreamErrorKind::Transport, &too_large),
        }
    }

    /// The origin-form URI of a call: the base's path, then the call's path and query (its `uri`
    /// is origin-form, `/users/42?x=1`). The pool adds the scheme and authority where HTTP/2
    /// needs them.
    fn uri(&self, call: Uri) -> Result<Uri, http::Error> {
        let path_and_query = call.into_parts().path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.base_path.is_empty() {
            return Ok(Uri::from(path_and_query));
        }
        Ok(Uri::from(PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path))?))
    }
}

impl tower::Service<Request<Body>> for HttpTransport {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Exchange;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The pool queues nothing of its own: it is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Exchange {
        self.0.start(request)
    }
}

/// The future of one exchange: the response head from the pool, then (unless the call streams)
/// its body read whole. A named type, so a call boxes nothing here.
pub(crate) struct Exchange {
    transport: Arc<Transport>,
    state: State,
}

enum State {
    Sending {
        response: pool::Sending,
        streamed: bool,
    },
    Reading {
        parts: Option<http::response::Parts>,
        body: Collect<Incoming>,
    },
    /// Failed before it was sent; `None` once the error is handed out.
    Failed(Option<UpstreamError>),
}

impl Future for Exchange {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Self { transport, state } = self.get_mut();
        loop {
            match state {
                State::Sending { response, streamed } => {
                    let response = match ready!(response.as_mut().poll(cx)) {
                        Ok(response) => response,
                        // A connection picked as the server closed it: another one takes the
                        // request (a fresh connection's refusal is an answer).
                        Err(pool::Failure::Send { unsent: Some(request), reused: true, .. }) => {
                            *response = transport.pool.send(*request);
                            continue;
                        }
                        Err(failure) => return Poll::Ready(Err(transport.failed_request(failure).into())),
                    };
                    let (parts, incoming) = response.into_parts();
                    // A coding hyper hands on undecoded would be read, or passed on, as the body.
                    // A body of known length had no `Transfer-Encoding` to frame it (hyper reads
                    // one in place of a `Content-Length`): only the others are looked at.
                    let framed_by_length = http_body::Body::size_hint(&incoming).exact().is_some();
                    if !framed_by_length && let Err(framing) = crate::field::transfer_codings(&parts.headers) {
                        return Poll::Ready(Err(transport.fail(UpstreamErrorKind::Transport, &framing).into()));
                    }
                    if *streamed {
                        return Poll::Ready(Ok(Response::from_parts(parts, Body::from(incoming))));
                    }
                    *state = State::Reading { parts: Some(parts), body: body::collect(incoming, MAX_BODY_BYTES) };
                }
                State::Reading { parts, body } => {
                    let bytes = ready!(Pin::new(body).poll(cx)).map_err(|e| transport.failed_body(e))?;
                    return Poll::Ready(match parts.take() {
                        Some(parts) => Ok(Response::from_parts(parts, Body::from(bytes))),
                        None => Err(POLLED_AFTER_END.into()),
                    });
                }
                State::Failed(error) => {
                    return Poll::Ready(Err(error.take().map_or_else(|| POLLED_AFTER_END.into(), BoxError::from)));
                }
            }
        }
    }
}

/// The error of an exchange polled again after it ended (a caller's bug, not a panic).
const POLLED_AFTER_END: &str = "an upstream exchange was polled after it ended";

/// Whether the server turned the call away without processing it: an HTTP/2 stream it reset with
/// `REFUSED_STREAM`, or one past the last id of its `GOAWAY` (RFC 9113 §8.7).
fn refused_unprocessed(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)));
        }
        source = e.source();
    }
    false
}

/// The TLS client settings of every upstream: `ring` chosen here, not installed process-wide
/// (the application decides that), and the platform's trust store; built once.
fn tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        use rustls_platform_verifier::BuilderVerifierExt;
        let ring = Arc::new(rustls::crypto::ring::default_provider());
        // ring offers every default protocol version, so this cannot fail.
        let versions = rustls::ClientConfig::builder_with_provider(ring)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        match versions.clone().with_platform_verifier() {
            Ok(builder) => builder.with_no_client_auth(),
            Err(e) => {
                tracing::error!(error = %e, "no platform trust store: calls to https upstreams will fail");
                versions.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
            }
        }
    })
}

/// An error with its sources, `a: b: c`, for logs (hyper's own `Display` says only "client error").
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
