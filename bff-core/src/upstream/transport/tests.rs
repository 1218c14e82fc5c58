//! The transport against real sockets: URIs, bodies, limits, and HTTP/1.1 vs HTTP/2 behaviour.

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use std::sync::atomic::Ordering::SeqCst;

use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use super::*;
use crate::identity::REQUEST_ID;

/// A plain upstream connection's stream is the TCP stream and a tag: the TLS stream that
/// hyper-rustls's own type holds inline (the assertion below bounds it) is boxed, on TLS
/// connections only.
#[test]
fn a_plain_upstream_connection_carries_no_tls_stream() {
    use std::mem::size_of;

    use hyper_util::rt::TokioIo;

    type Tcp = TokioIo<connect::QuietTcp>;
    assert!(size_of::<connect::UpstreamIo>() <= size_of::<Tcp>() + 8, "{} bytes", size_of::<connect::UpstreamIo>());
    assert!(size_of::<hyper_rustls::MaybeHttpsStream<Tcp>>() > 1024, "hyper-rustls's stream is small now: drop `Slim`");
}

#[test]
fn paths_and_queries_join_the_base() {
    let settings = UpstreamSettings::bare();
    let t = |base: &str, path: &str| {
        let transport = HttpTransport::new(Arc::from("x"), &base.parse().unwrap(), &settings);
        transport.0.uri(path.parse().unwrap()).unwrap().to_string()
    };
    assert_eq!(t("http://127.0.0.1:7001", "/users/42"), "/users/42");
    assert_eq!(t("http://h:1/", "/orders?user=42&limit=3"), "/orders?user=42&limit=3");
    assert_eq!(t("http://h:1/api/", "/users/%2F"), "/api/users/%2F");
    assert_eq!(t("http://h:1/api", "/?q=1"), "/api/?q=1");
    assert_eq!(t("https://h.example", "/x"), "/x");
}

/// An upstream at `base` with the whole outbound stack.
fn through_stack(name: &str, base: &HttpUrl, protocol: UpstreamProtocol) -> super::super::Upstream {
    super::super::Upstream::new(name, base, settings(protocol), &crate::observe::metrics::Metrics::new())
}

/// A JSON `GET` through the whole stack.
async fn get(upstream: &super::super::Upstream, path: &str) -> Result<serde_json::Value, UpstreamError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    upstream.get(path).send_within(HeaderValue::from_static("req-1"), deadline).await
}

/// A listener on a free port of 127.0.0.1, and its base URL with `scheme`.
async fn listen(scheme: &str) -> (tokio::net::TcpListener, HttpUrl) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("{scheme}://{}", listener.local_addr().unwrap()).parse().unwrap();
    (listener, base)
}

/// A one-connection HTTP/1.1 server that answers `chunks` as a chunked body, each chunk its own
/// write, and hands back the request head it read.
async fn chunked_server(chunks: &'static [&'static str]) -> (HttpUrl, tokio::task::JoinHandle<String>) {
    framed_server("chunked", chunks).await
}

/// [`chunked_server`] with `Transfer-Encoding: {codings}`, chunked all the same.
async fn framed_server(
    codings: &'static str,
    chunks: &'static [&'static str],
) -> (HttpUrl, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, base) = listen("http").await;
    let served = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let answer = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {codings}\r\n\r\n");
        socket.write_all(answer.as_bytes()).await.unwrap();
        for chunk in chunks {
            socket.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).await.unwrap();
            socket.flush().await.unwrap();
        }
        socket.write_all(b"0\r\n\r\n").await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (base, served)
}

/// One exchange through `transport` alone (no stack): the buffered body of any status.
async fn call(transport: &HttpTransport, path: &str) -> Result<Bytes, UpstreamError> {
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = path.parse().unwrap();
    request.headers_mut().insert(crate::identity::REQUEST_ID, HeaderValue::from_static("req-1"));
    let response =
        transport.clone().oneshot(request).await.map_err(|e| UpstreamError::from_stack(&Arc::from("t"), e))?;
    Ok(response.into_body().into_buffered().expect("the transport buffers bodies"))
}

#[tokio::test]
async fn a_body_in_many_frames_is_joined_and_the_request_carries_host_and_id() {
    crate::install_crypto_provider();
    let (base, served) = chunked_server(&["{\"a\":", "[1,2,", "3]}"]).await;
    let transport = HttpTransport::new(Arc::from("chunky"), &base, &UpstreamSettings::bare());
    let body = call(&transport, "/things?x=1").await.unwrap();
    assert_eq!(&body[..], b"{\"a\":[1,2,3]}");
    let head = served.await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /things?x=1 http/1.1\r\n"), "{head}");
    let port = base.port().unwrap();
    assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")), "{head}");
    assert!(head.contains("\r\nx-request-id: req-1\r\n"), "{head}");
}

/// An answer framed by a coding hyper would hand on undecoded (`gzip, chunked`: it decodes the
/// chunks, not the gzip) fails as the upstream's, whether the body is read whole or streamed on:
/// never the compressed bytes as if they were the body.
#[tokio::test]
async fn an_answer_in_a_transfer_coding_not_read_fails_the_call() {
    crate::install_crypto_provider();
    // `gzip` alone: hyper reads the body to the connection's close, the gzip undecoded again.
    for (codings, streamed) in [("gzip, chunked", false), ("gzip, chunked", true), ("gzip", false), ("gzip", true)] {
        let (base, _served) = framed_server(codings, &["\x1f\x08"]).await;
        let transport = HttpTransport::new(Arc::from("zipped"), &base, &UpstreamSettings::bare());
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/".parse().unwrap();
        if streamed {
            request.extensions_mut().insert(ReadAsStream);
        }
        let error = transport.clone().oneshot(request).await.map(drop).unwrap_err();
        let error = UpstreamError::from_stack(&Arc::from("zipped"), error);
        assert_eq!(error.kind(), &UpstreamErrorKind::Transport, "{codings}, streamed: {streamed}");
        assert!(error.cause().unwrap().contains("`Transfer-Encoding: gzip`"), "{error:?}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_fails_the_call_instead_of_filling_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    crate::install_crypto_provider();
    let (listener, base) = listen("http").await;
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0; 1024];
        let _ = socket.read(&mut request).await.unwrap();
        let len = MAX_BODY_BYTES + 1;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if socket.write_all(&chunk[..n]).await.is_err() {
                return; // the client gave up reading, as it should
            }
            left -= n;
        }
    });
    let transport = HttpTransport::new(Arc::from("big"), &base, &UpstreamSettings::bare());
    let error = call(&transport, "/").await.unwrap_err();
    assert_eq!(error.kind(), &UpstreamErrorKind::Transport);
    assert!(error.cause().unwrap().contains("length limit"), "{error:?}");
}

/// A `200` with `{}`, as the test servers' service answers.
fn empty_json() -> Result<http::Response<http_body_util::Full<Bytes>>, std::convert::Infallible> {
    Ok(http::Response::new(http_body_util::Full::new(Bytes::from_static(b"{}"))))
}

/// What a version-recording server saw: one entry per request, and the connections accepted.
#[derive(Default)]
struct Seen {
    requests: std::sync::Mutex<Vec<(http::Version, Option<HeaderValue>)>>,
    connections: AtomicUsize,
    /// Connections ended (by the client, in these tests).
    closed: AtomicUsize,
}

/// A server speaking HTTP/1.1 and HTTP/2 without TLS (h2c by prior knowledge), recording each
/// request's version and request id, and answering `{}` once `together` requests are in at once:
/// the calls a test makes are then all in flight together, with no timing involved.
async fn recording_server(together: usize) -> (HttpUrl, Arc<Seen>) {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    let (listener, base) = listen("http").await;
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    let all_in = Arc::new(tokio::sync::Barrier::new(together));
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            recorded.connections.fetch_add(1, SeqCst);
            let closed = recorded.clone();
            let (recorded, all_in) = (recorded.clone(), all_in.clone());
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let entry = (request.version(), request.headers().get(REQUEST_ID).cloned());
                recorded.requests.lock().unwrap().push(entry);
                let all_in = all_in.clone();
                async move {
                    all_in.wait().await;
                    empty_json()
                }
            });
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let served = builder.serve_connection(TokioIo::new(socket), service).await;
                closed.closed.fetch_add(1, SeqCst);
                served
            });
        }
    });
    (base, seen)
}

fn settings(protocol: UpstreamProtocol) -> UpstreamSettings {
    UpstreamSettings { protocol, ..UpstreamSettings::bare() }
}

#[tokio::test]
async fn http2_multiplexes_concurrent_calls_over_one_connection() {
    crate::install_crypto_provider();
    let (base, seen) = recording_server(20).await;
    let transport = HttpTransport::new(Arc::from("h2"), &base, &settings(UpstreamProtocol::Http2));
    let calls = (0..20).map(|_| call(&transport, "/x"));
    for body in futures::future::join_all(calls).await {
        assert_eq!(&body.unwrap()[..], b"{}");
    }
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 20);
    assert!(requests.iter().all(|(version, id)| *version == http::Version::HTTP_2 && id.as_ref().unwrap() == "req-1"));
    assert_eq!(seen.connections.load(SeqCst), 1, "all calls share one connection");
}

#[tokio::test]
async fn http2_calls_past_the_servers_stream_limit_wait_for_a_stream_instead_of_failing() {
    use hyper_util::rt::TokioIo;
    crate::install_crypto_provider();
    let (listener, base) = listen("http").await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (counted, seen_most) = (in_flight.clone(), most.clone());
    // Calls are answered in pairs, so the server always holds as many streams as it allows.
    let pair = Arc::new(tokio::sync::Barrier::new(2));
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
            let (in_flight, most, pair) = (counted.clone(), seen_most.clone(), pair.clone());
            async move {
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                pair.wait().await;
                in_flight.fetch_sub(1, SeqCst);
                empty_json()
            }
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(2)
            .serve_connection(TokioIo::new(socket), service)
            .await
    });
    // Through the whole stack: a stream refused before the server's limit was known is resent.
    let narrow = through_stack("narrow", &base, UpstreamProtocol::Http2);
    let calls = (0..8).map(|_| get(&narrow, "/x"));
    for body in futures::future::join_all(calls).await {
        assert_eq!(body.unwrap(), serde_json::json!({}));
    }
    assert_eq!(most.load(SeqCst), 2, "the server's limit was respected");
}

#[tokio::test]
async fn http2_calls_turned_away_by_goaway_before_processing_are_sent_again() {
    use hyper_util::rt::TokioIo;
    crate::install_crypto_provider();
    let (listener, base) = listen("http").await;
    tokio::spawn(async move {
        // The first connection reads up to the call's HEADERS frame, then says GOAWAY having
        // processed nothing (last stream id 0), as a server shutting down does. Raw frames:
        // h2's own server counts a stream as processed as soon as its HEADERS arrive.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0; 24];
        socket.read_exact(&mut preface).await.unwrap();
        loop {
            let mut head = [0; 9];
            socket.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            socket.read_exact(&mut vec![0; len]).await.unwrap();
            if head[3] == 0x1 {
                break; // HEADERS: the call is on the wire
            }
        }
        let settings = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        let goaway = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        socket.write_all(&[&settings[..], &goaway[..]].concat()).await.unwrap();
        // The second one answers.
        let (socket, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async { empty_json() });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(socket), service)
            .await
    });
    // Through the whole stack: the resend is its retry policy, not the transport's.
    let leaving = through_stack("leaving", &base, UpstreamProtocol::Http2);
    assert_eq!(get(&leaving, "/x").await.unwrap(), serde_json::json!({}));
}

#[tokio::test]
async fn http1_and_auto_over_plain_http_open_a_connection_per_concurrent_call() {
    // No answer comes before all five calls are in, so no call can find another's connection idle.
    crate::install_crypto_provider();
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::Auto] {
        let (base, seen) = recording_server(5).await;
        let transport = HttpTransport::new(Arc::from("h1"), &base, &settings(protocol));
        let calls = (0..5).map(|_| call(&transport, "/x"));
        assert!(futures::future::join_all(calls).await.iter().all(Result::is_ok));
        let requests = seen.requests.lock().unwrap().clone();
        assert!(requests.iter().all(|(version, _)| *version == http::Version::HTTP_11), "{protocol:?}");
        assert_eq!(seen.connections.load(SeqCst), 5, "{protocol:?}");
    }
}

#[tokio::test]
async fn http2_against_a_server_that_speaks_only_http1_fails_as_transport() {
    crate::install_crypto_provider();
    let (base, served) = chunked_server(&["{}"]).await;
    let transport = HttpTransport::new(Arc::from("old"), &base, &settings(UpstreamProtocol::Http2));
    let error = call(&transport, "/").await.unwrap_err();
    assert_eq!(error.kind(), &UpstreamErrorKind::Transport, "{error:?}");
    served.abort();
}

/// A TLS server (certificate for 127.0.0.1 from `testdata/tls`) offering `alpn`, recording each
/// request's HTTP version; and a client TLS config that trusts its CA.
async fn tls_server(alpn: &[&[u8]]) -> (HttpUrl, Arc<Seen>, rustls::ClientConfig) {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::install_crypto_provider();
    let cert = CertificateDer::from_pem_slice(include_bytes!("../../../testdata/tls/localhost.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../../testdata/tls/localhost.key")).unwrap();
    let mut server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(include_bytes!("../../../testdata/tls/ca.pem")).unwrap()).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();

    let (listener, base) = listen("https").await;
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(socket).await else { continue };
            recorded.connections.fetch_add(1, SeqCst);
            let recorded = recorded.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                recorded.requests.lock().unwrap().push((request.version(), None));
                async { empty_json() }
            });
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                builder.serve_connection(TokioIo::new(tls), service).await
            });
        }
    });
    (base, seen, client)
}

#[tokio::test]
async fn over_tls_the_protocol_is_negotiated_by_alpn() {
    // (what the client may speak, what the server offers, what they must agree on)
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let h1_only: &[&[u8]] = &[b"http/1.1"];
    let cases = [
        (UpstreamProtocol::Http1, both, http::Version::HTTP_11),
        (UpstreamProtocol::Auto, both, http::Version::HTTP_2),
        (UpstreamProtocol::Auto, h1_only, http::Version::HTTP_11),
        (UpstreamProtocol::Http2, both, http::Version::HTTP_2),
    ];
    for (protocol, offered, expected) in cases {
        let (base, seen, tls) = tls_server(offered).await;
        let transport = HttpTransport::with_tls(Arc::from("tls"), &base, &settings(protocol), tls);
        assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}", "{protocol:?}");
        let versions: Vec<_> = seen.requests.lock().unwrap().iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, [expected], "{protocol:?} against {offered:?}");
    }
    // HTTP/2 only, against a server that cannot agree to it: the handshake fails, no call is made.
    let (base, seen, tls) = tls_server(h1_only).await;
    let transport = HttpTransport::with_tls(Arc::from("tls"), &base, &settings(UpstreamProtocol::Http2), tls);
    assert!(call(&transport, "/x").await.is_err());
    assert!(seen.requests.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dead_http2_connection_is_found_by_ping_and_replaced() {
    use hyper_util::rt::TokioIo;
    crate::install_crypto_provider();
    let (listener, base) = listen("http").await;
    tokio::spawn(async move {
        // The first connection completes the handshake, then goes silent: no answers, no pings
        // answered, as behind a NAT that dropped the flow.
        let (socket, _) = listener.accept().await.unwrap();
        let mut silent = h2::server::handshake(socket).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(10), silent.accept()).await;
        let (socket, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async { empty_json() });
        let answered = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(socket), service)
            .await;
        drop(silent);
        answered
    });
    let transport = HttpTransport::new(Arc::from("silent"), &base, &settings(UpstreamProtocol::Http2));
    // The first call hangs on the silent connection until its own timeout gives up on it.
    assert!(tokio::time::timeout(Duration::from_secs(1), call(&transport, "/x")).await.is_err());
    // Within a ping interval and a ping timeout the client notices, and the next call reconnects.
    tokio::time::sleep(H2_PING_INTERVAL + H2_PING_TIMEOUT + Duration::from_secs(1)).await;
    let answered = tokio::time::timeout(Duration::from_secs(1), call(&transport, "/x")).await;
    assert_eq!(&answered.expect("a new connection answers").unwrap()[..], b"{}");
}

#[tokio::test]
async fn http1_calls_one_after_another_share_one_connection() {
    crate::install_crypto_provider();
    let (base, seen) = recording_server(1).await;
    let transport = HttpTransport::new(Arc::from("h1"), &base, &settings(UpstreamProtocol::Http1));
    for _ in 0..5 {
        assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}");
    }
    assert_eq!(seen.requests.lock().unwrap().len(), 5);
    assert_eq!(seen.connections.load(SeqCst), 1);
}

/// A one-request-per-connection HTTP/1.1 server: each answer says nothing of closing, and then
/// the server closes, as one whose keep-alive timeout is zero does.
async fn closing_server() -> (HttpUrl, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, base) = listen("http").await;
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, SeqCst);
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "the request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            socket.write_all(answer).await.unwrap();
        }
    });
    (base, connections)
}

#[tokio::test]
async fn an_http1_connection_the_server_closed_is_not_used_again() {
    crate::install_crypto_provider();
    let (base, connections) = closing_server().await;
    let transport = HttpTransport::new(Arc::from("h1"), &base, &settings(UpstreamProtocol::Http1));
    assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}");
    // Until the client has read the close, the connection looks idle: the pool then finds it
    // refusing the request, and sends it on a new one. Either way the call succeeds.
    for _ in 0..3 {
        assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}");
    }
    assert_eq!(connections.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn idle_http1_connections_past_the_pools_limit_and_then_its_idle_timeout_are_closed() {
    crate::install_crypto_provider();
    let (base, seen) = recording_server(3).await;
    let settings = UpstreamSettings { pool_max_idle: 1, ..settings(UpstreamProtocol::Http1) };
    let transport = HttpTransport::new(Arc::from("h1"), &base, &settings);
    let calls = (0..3).map(|_| call(&transport, "/x"));
    assert!(futures::future::join_all(calls).await.iter().all(Result::is_ok));
    assert_eq!(seen.connections.load(SeqCst), 3);
    let closed_within = |limit: Duration, count: usize| {
        let seen = seen.clone();
        async move {
            let deadline = tokio::time::Instant::now() + limit;
            while seen.closed.load(SeqCst) < count && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen.closed.load(SeqCst)
        }
    };
    // The next sweep closes the two past the limit, and keeps one.
    assert_eq!(closed_within(pool::SWEEP_EVERY * 3, 2).await, 2);
    assert_eq!(closed_within(POOL_IDLE_TIMEOUT / 2, 3).await, 2, "one idle connection is kept");
    // The kept one goes once idle for the idle timeout.
    assert_eq!(closed_within(POOL_IDLE_TIMEOUT, 3).await, 3);
}

/// An HTTP/1.1 server that holds every `/hold/<group>` request (reporting each on `held`) until
/// `release` reaches its group, and answers any other at once; and its count of connections.
async fn holding_server(
    release: tokio::sync::watch::Receiver<u32>,
) -> (HttpUrl, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use hyper_util::rt::TokioIo;
    let (listener, base) = listen("http").await;
    let connections = Arc::new(AtomicUsize::new(0));
    let (held, held_rx) = tokio::sync::mpsc::unbounded_channel();
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, SeqCst);
            let (release, held) = (release.clone(), held.clone());
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let (mut release, held) = (release.clone(), held.clone());
                let group = request.uri().path().strip_prefix("/hold/").and_then(|g| g.parse::<u32>().ok());
                async move {
                    if let Some(group) = group {
                        let _ = held.send(());
                        let _ = release.wait_for(|released| *released >= group).await;
                    }
                    empty_json()
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service));
        }
    });
    (base, connections, held_rx)
}

/// Yields until `done`, a thousand times at most (other tasks, not time, make it true).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn short_calls_find_their_connections_in_front_of_long_ones_and_the_sweep_puts_idle_ones_first() {
    crate::install_crypto_provider();
    let (release, released) = tokio::sync::watch::channel(0);
    let (base, connections, mut held) = holding_server(released).await;
    let transport = HttpTransport::new(Arc::from("h1"), &base, &settings(UpstreamProtocol::Http1));
    let pool = transport.0.pool.clone();
    // 100 long calls, in two groups taken in turns: every connection busy.
    let holding: Vec<_> = (0..100)
        .map(|i| {
            let transport = transport.clone();
            tokio::spawn(async move { call(&transport, &format!("/hold/{}", 1 + i % 2)).await })
        })
        .collect();
    for _ in 0..100 {
        held.recv().await.unwrap();
    }
    // A short call opens a connection, put first; once it is ready, the next short call takes it.
    assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}");
    assert_eq!(connections.load(SeqCst), 101);
    until(|| pool.http1_ready()[0]).await;
    let ready = pool.http1_ready();
    assert!(ready[0] && ready.iter().filter(|ready| **ready).count() == 1, "{ready:?}");
    assert_eq!(&call(&transport, "/x").await.unwrap()[..], b"{}");
    assert_eq!(connections.load(SeqCst), 101, "the short call found the ready connection");
    // The first group ends: its connections are ready, among busy ones, until the sweep puts them
    // first.
    release.send(1).unwrap();
    until(|| pool.http1_ready().iter().filter(|ready| **ready).count() == 51).await;
    tokio::time::sleep(pool::SWEEP_EVERY * 2).await;
    let ready = pool.http1_ready();
    assert_eq!(ready.len(), 101);
    assert!(ready[..51].iter().all(|ready| *ready) && !ready[51..].iter().any(|ready| *ready), "{ready:?}");
    release.send(2).unwrap();
    for call in holding {
        assert_eq!(&call.await.unwrap().unwrap()[..], b"{}");
    }
    assert_eq!(connections.load(SeqCst), 101);
}

fn capped(max: usize) -> UpstreamSettings {
    UpstreamSettings { pool_max_connections: NonZeroUsize::new(max), ..settings(UpstreamProtocol::Http1) }
}

/// A transport capped at `max` connections to a [`holding_server`]: the sender that releases
/// its held calls, its count of connections, and the calls it holds, as they arrive.
async fn capped_holding(
    max: usize,
) -> (HttpTransport, tokio::sync::watch::Sender<u32>, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<()>) {
    crate::install_crypto_provider();
    let (release, released) = tokio::sync::watch::channel(0);
    let (base, connections, held) = holding_server(released).await;
    (HttpTransport::new(Arc::from("h1"), &base, &capped(max)), release, connections, held)
}

#[tokio::test(start_paused = true)]
async fn over_the_connection_cap_calls_wait_for_a_connection_instead_of_opening_one() {
    let (transport, release, connections, mut held) = capped_holding(2).await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let transport = transport.clone();
            tokio::spawn(async move { call(&transport, "/hold/1").await })
        })
        .collect();
    // Two reach the server on two connections; the other four wait in the BFF.
    for _ in 0..2 {
        held.recv().await.unwrap();
    }
    until(|| false).await;
    assert!(held.try_recv().is_err(), "a third call reached the server");
    assert_eq!(connections.load(SeqCst), 2);
    // Released, each connection carries the waiting calls in turn.
    release.send(1).unwrap();
    for call in calls {
        assert_eq!(&call.await.unwrap().unwrap()[..], b"{}");
    }
    assert_eq!(connections.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_gives_up_waiting_leaves_the_line_and_the_next_one_is_served() {
    let (transport, release, connections, mut held) = capped_holding(1).await;
    let holding = tokio::spawn({
        let transport = transport.clone();
        async move { call(&transport, "/hold/1").await }
    });
    held.recv().await.unwrap();
    // First in line, it gives up (its per-try timeout, here a plain timeout); the second in line
    // must then be told it is first, or it would wait for ever.
    let first = tokio::spawn({
        let transport = transport.clone();
        async move { tokio::time::timeout(Duration::from_secs(1), call(&transport, "/x")).await }
    });
    until(|| false).await;
    let second = tokio::spawn({
        let transport = transport.clone();
        async move { tokio::time::timeout(Duration::from_secs(30), call(&transport, "/x")).await }
    });
    assert!(first.await.unwrap().is_err(), "the first waiter should have timed out");
    release.send(1).unwrap();
    assert_eq!(&holding.await.unwrap().unwrap()[..], b"{}");
    let second = second.await.unwrap().expect("the second waiter was served");
    assert_eq!(&second.unwrap()[..], b"{}");
    assert_eq!(connections.load(SeqCst), 1);
}

#[tokio::test]
async fn under_the_cap_a_connection_the_server_closed_makes_room_for_a_new_one() {
    crate::install_crypto_provider();
    let (base, connections) = closing_server().await;
    let transport = HttpTransport::new(Arc::from("h1"), &base, &capped(1));
    // Each connection carries one call and closes: every waiting call gets a new one in turn.
    let calls = (0..4).map(|_| call(&transport, "/x"));
    for body in futures::future::join_all(calls).await {
        assert_eq!(&body.unwrap()[..], b"{}");
    }
    assert_eq!(connections.load(SeqCst), 4);
}
