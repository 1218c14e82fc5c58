//! Passthrough routes (`[[proxy]]`) through bff-web's shipped config: products, files, uploads and
//! events forwarded to the mocks, both bodies streamed, with the edge's checks and the verified
//! identity, and nothing a client writes in a path reaching the mocks' admin routes.

mod common;

use std::time::Duration;

use common::{Stack, StackBuilder, raw_http};
use futures::StreamExt;
use services_mock::Service;
use services_mock::services::streams::file_byte;
use sha2::{Digest, Sha256};

async fn web() -> Stack {
    StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("a number of kB") * 1024
}

/// Samples `rss()` until dropped; the highest seen.
struct RssPeak {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    fn start() -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss()));
        let sampled = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                sampled.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        Self { peak, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(std::sync::atomic::Ordering::Relaxed).max(rss())
    }
}

/// An HTTP/2 connection (prior knowledge, as h2c) to `addr`, driven in its own task.
async fn http2(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    send
}

const MIB: u64 = 1024 * 1024;
/// What a 256 MiB transfer may add to the test process (mocks, BFF and client together).
const BOUND: u64 = 64 * MIB;

#[tokio::test]
async fn products_pass_through_unshaped_with_forwarding_headers_and_no_hop_headers() {
    let stack = web().await;
    let response = stack
        .http
        .get(stack.bff.url("/api/catalog/products/SKU-0001?fields=name"))
        .header("x-user-id", "7")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("x-http-method-override", "DELETE")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["via"], "1.1 bff");
    assert!(headers["etag"].to_str().unwrap().starts_with('"'), "the upstream's ETag is passed on");
    assert_eq!(
        headers["cache-control"], "public, max-age=60, stale-if-error=300",
        "a public route keeps the upstream's"
    );
    assert!(!headers.contains_key("content-encoding"), "not compressed: passed through as the upstream sent it");
    let product: serde_json::Value = response.json().await.unwrap();
    assert_eq!(product["sku"], "SKU-0001");
    assert!(product.get("price").is_some(), "`fields=` is the upstream's business: not applied here: {product}");
    let seen = stack.stats(Service::Catalog).last_headers;
    assert_eq!(seen.get("x-forwarded-for").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(seen.get("x-forwarded-proto").map(String::as_str), Some("http"));
    assert!(seen.get("forwarded").is_some_and(|f| f.starts_with("for=127.0.0.1;host=")), "{seen:?}");
    assert_eq!(seen.get("via").map(String::as_str), Some("1.1 bff"));
    assert!(seen.contains_key("x-request-id"));
    for dropped in ["x-user-id", "x-secret-hop", "connection", "x-http-method-override"] {
        assert!(!seen.contains_key(dropped), "{dropped} reached the upstream: {seen:?}");
    }
    // Escaped unreserved characters are the same path (RFC 3986 §6.2.2.2).
    let request = "GET /api/%63atalog/products/SKU%2D0001 HTTP/1.1\r\nHost: bff\r\nConnection: close\r\n\r\n";
    let (status, body) = raw_http(stack.bff.addr, request).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""sku":"SKU-0001""#), "{body}");
    // Dot segments resolved and repeated slashes merged before routing: the upstream is sent the
    // path they name; one climbing above the root is refused.
    for spelling in ["/api/catalog/products/x/../SKU-0002", "/api//catalog/./products/%2e%2e/products/SKU-0002"] {
        let request = format!("GET {spelling} HTTP/1.1\r\nHost: bff\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_http(stack.bff.addr, &request).await;
        assert_eq!(status, 200, "{spelling}: {body}");
        assert!(body.contains(r#""sku":"SKU-0002""#), "{spelling}: {body}");
        assert_eq!(stack.stats(Service::Catalog).last_path.as_deref(), Some("/products/SKU-0002"));
    }
    let request = "GET /api/../../products/SKU-0001 HTTP/1.1\r\nHost: bff\r\nConnection: close\r\n\r\n";
    let (status, body) = raw_http(stack.bff.addr, request).await;
    assert!(status == 400 && body.contains(r#""code":"INVALID_PATH""#), "{status} {body}");
    // A method the route does not take: 405 naming the ones it does.
    let response = stack.http.post(stack.bff.url("/api/catalog/products/SKU-0001")).send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().replace(' ', "");
    assert_eq!(allow, "GET,HEAD");
    common::problem(response, 405, "METHOD_NOT_ALLOWED").await;
    // A route that lists `GET` alone answers `HEAD` too, as a handler route does: the upstream's
    // head, no body; and its 405 says so.
    let response = stack.http.head(stack.bff.url("/api/catalog/files/1000")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1000");
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(stack.stats(Service::Catalog).last_path.as_deref(), Some("/files/1000"));
    let response = stack.http.delete(stack.bff.url("/api/catalog/files/1000")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    common::problem(response, 405, "METHOD_NOT_ALLOWED").await;
    // A product the catalog does not have: its 404, as it answered.
    let response = stack.http.get(stack.bff.url("/api/catalog/products/NOPE")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // Counted under the route's pattern and the upstream's name.
    let metrics = stack.admin_text("/metrics").await;
    assert!(metrics.contains(r#"route="/api/catalog/products/{*rest}""#), "{metrics}");
}

#[tokio::test]
async fn a_256_mib_download_streams_through_within_the_memory_bound() {
    let stack = web().await;
    let size = 256 * MIB;
    let before = rss();
    let peak = RssPeak::start();
    let response = stack.http.get(stack.bff.url(&format!("/api/catalog/files/{size}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], size.to_string().as_str());
    let mut body = response.bytes_stream();
    let mut offset = 0_u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the body streams whole");
        // The pattern, checked at each chunk's ends.
        assert_eq!(chunk[0], file_byte(offset), "at {offset}");
        assert_eq!(chunk[chunk.len() - 1], file_byte(offset + chunk.len() as u64 - 1));
        offset += chunk.len() as u64;
    }
    let peak = peak.stop();
    assert_eq!(offset, size);
    let grew = peak.saturating_sub(before);
    assert!(grew < BOUND, "RSS grew by {} MiB moving 256 MiB", grew / MIB);
}

#[tokio::test]
async fn a_slow_source_reaches_the_client_before_it_has_produced_the_rest() {
    let stack = web().await;
    // Two chunks, a minute apart: the first must arrive long before the second is made.
    let url = stack.bff.url("/api/catalog/files/131072?chunk_delay_ms=60000");
    let response = stack.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(20), body.next()).await;
    let first = first.expect("the first chunk came before the second was produced").unwrap().unwrap();
    assert!(!first.is_empty());
}

#[tokio::test]
async fn a_256_mib_upload_streams_up_and_a_body_over_the_limit_is_a_413() {
    let stack = web().await;
    let size = 256 * MIB;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 7) as u8).collect();
    let mut expected = Sha256::new();
    for _ in 0..256 {
        expected.update(&chunk);
    }
    let expected: String = expected.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let before = rss();
    let peak = RssPeak::start();
    let chunks = futures::stream::iter((0..256).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = stack
        .http
        .put(stack.bff.url("/api/uploads"))
        .bearer_auth(stack.token())
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let peak = peak.stop();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], size);
    assert_eq!(answer["sha256"], expected.as_str());
    let grew = peak.saturating_sub(before);
    assert!(grew < BOUND, "RSS grew by {} MiB moving 256 MiB", grew / MIB);

    // Two `Idempotency-Key`s: each goes upstream scoped to the caller, as one does, so neither
    // is a key the client chose (the mock keeps the last).
    let two = stack.http.put(stack.bff.url("/api/uploads")).bearer_auth(stack.token());
    let two = two.header("idempotency-key", "first").header("idempotency-key", "chosen-by-client");
    assert_eq!(two.body("x").send().await.unwrap().status(), 200);
    let seen = stack.stats(Service::Catalog).last_headers["idempotency-key"].clone();
    assert!(seen.len() == 64 && seen.bytes().all(|b| b.is_ascii_hexdigit()), "{seen}");

    // No token: refused before anything is sent.
    let calls = stack.stats(Service::Catalog).requests;
    let response = stack.http.put(stack.bff.url("/api/uploads")).body("x").send().await.unwrap();
    common::problem(response, 401, "AUTH_REQUIRED").await;
    assert_eq!(stack.stats(Service::Catalog).requests, calls);
}

/// bff-web with one more route, whose body limit and timeout are small.
async fn web_with_small_uploads() -> Stack {
    web_with_small_uploads_over("http1").await
}

/// [`web_with_small_uploads`], calling its upstreams over `protocol` (`http1`, `http2`).
async fn web_with_small_uploads_over(protocol: &str) -> Stack {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/small-uploads\"\nmethods = [\"PUT\"]\nupstream = \"catalog\"\n\
         rewrite = \"/uploads\"\naccess = \"scope:profile\"\nmax_body_bytes = 1000\ntimeout = \"1s\"\n",
        bff_demo::WEB_CONFIG
    );
    StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app).set("defaults.protocol", protocol).start().await
}

#[tokio::test]
async fn a_body_over_the_routes_limit_is_a_413_declared_or_streamed() {
    let stack = web_with_small_uploads().await;
    let put = || stack.http.put(stack.bff.url("/api/small-uploads")).bearer_auth(stack.token());
    let response = put().body(vec![1_u8; 1000]).send().await.unwrap();
    assert_eq!(response.status(), 200, "at the limit");
    let response = put().body(vec![1_u8; 1001]).send().await.unwrap();
    common::problem(response, 413, "BODY_TOO_LARGE").await;
    // No length declared: counted as it streams.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![2_u8; 400])));
    let response = put().body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    common::problem(response, 413, "BODY_TOO_LARGE").await;
}

/// A client's upload that is malformed, breaks off or streams past the limit is the client's
/// failure, never the upstream's: were it counted against the upstream, twenty such uploads would
/// open its circuit and take every route to it down for everyone.
#[tokio::test]
async fn a_broken_upload_is_the_clients_failure_not_the_upstreams() {
    for protocol in ["http1", "http2"] {
        broken_uploads_over(protocol).await;
    }
}

async fn broken_uploads_over(protocol: &str) {
    let stack = web_with_small_uploads_over(protocol).await;
    let put = |body: &str, framing: &str| {
        format!(
            "PUT /api/small-uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {}\r\n{framing}\r\n\
             Connection: close\r\n\r\n{body}",
            stack.token()
        )
    };
    let chunked = "Transfer-Encoding: chunked";
    for _ in 0..25 {
        // A chunk whose size line ends without its CR, and one whose size overflows.
        for body in ["5\nhello\n0\n\n", "fffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"] {
            let (status, answer) = raw_http(stack.bff.addr, &put(body, chunked)).await;
            assert_eq!(status, 400, "{answer}");
            assert!(answer.contains(r#""code":"INVALID_BODY""#), "{answer}");
        }
        // Streamed past the route's limit.
        let over = format!("400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n", "a".repeat(1024), "b".repeat(1024));
        let (status, answer) = raw_http(stack.bff.addr, &put(&over, chunked)).await;
        assert_eq!(status, 413, "{answer}");
    }
    // A client that goes away with its body unfinished.
    for _ in 0..25 {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(stack.bff.addr).await.unwrap();
        tcp.write_all(put("only part of it", "Content-Length: 900").as_bytes()).await.unwrap();
        let seen = stack.stats(Service::Catalog).requests;
        let reached = common::eventually(Duration::from_secs(10), || async {
            stack.stats(Service::Catalog).in_flight > 0 || stack.stats(Service::Catalog).requests > seen
        })
        .await;
        assert!(reached, "the upload began upstream");
        drop(tcp);
        let gone =
            common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Catalog).in_flight == 0 });
        assert!(gone.await, "the abandoned upload ended upstream");
    }
    // Clients that stop sending: their uploads run out of time as theirs, not the upstream's.
    let stalled_request = put("only part of it", "Content-Length: 900");
    let stalled = (0..25).map(|_| raw_http(stack.bff.addr, &stalled_request));
    for (status, answer) in futures::future::join_all(stalled).await {
        assert_eq!(status, 408, "{answer}");
        assert!(answer.contains(r#""code":"BODY_TIMEOUT""#), "{answer}");
    }
    let products = stack.get("/api/catalog/products/SKU-0001").await;
    assert_eq!(products.status(), 200, "the catalog's circuit stays closed");
    let metrics = stack.admin_text("/metrics").await;
    let counted = |outcome: &str| {
        let series = format!("bff_upstream_requests_total{{upstream=\"catalog\",outcome=\"{outcome}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series} in {metrics}"));
        line[series.len()..].parse::<u64>().unwrap()
    };
    assert!(counted("request_body") >= 100, "{metrics}");
    assert_eq!(counted("transport") + counted("timeout"), 0, "{metrics}");
    assert!(metrics.contains(r#"bff_upstream_circuit_transitions_total{upstream="catalog",to="open"} 0"#), "{metrics}");
}

/// An upload holds its place in the upstream's `max_in_flight` while its client sends the body,
/// at the client's pace: a route's own `max_in_flight` keeps stalled uploads from taking the
/// places that the upstream's other routes need.
#[tokio::test]
async fn a_routes_max_in_flight_keeps_its_stalled_uploads_from_the_upstreams_other_routes() {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/few-uploads\"\nmethods = [\"PUT\"]\nupstream = \"catalog\"\n\
         rewrite = \"/uploads\"\naccess = \"scope:profile\"\nmax_in_flight = 2\n",
        bff_demo::WEB_CONFIG
    );
    let stack = StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app)
        .set("upstreams.catalog.max_in_flight", "3")
        .start()
        .await;
    let stalled_upload = || async {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(stack.bff.addr).await.unwrap();
        let head = format!(
            "PUT /api/few-uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\nslow",
            stack.token()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp
    };
    let stalled = [stalled_upload().await, stalled_upload().await];
    let both = common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Catalog).in_flight == 2 });
    assert!(both.await, "two uploads wait on their clients");
    // A third stalled upload is refused at once, and takes no place upstream.
    let mut third = stalled_upload().await;
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut third, &mut answer));
    let n = read.await.expect("answered at once, not left waiting on its body").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("ROUTE_OVERLOADED") && answer.contains("retry-after: 1"), "{answer}");
    // The upstream has a place left for its other routes.
    assert_eq!(stack.get("/api/catalog/products/SKU-0003").await.status(), 200);
    let put = || stack.http.put(stack.bff.url("/api/few-uploads")).bearer_auth(stack.token()).body("x").send();
    drop((stalled, third));
    let gone = common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Catalog).in_flight == 0 });
    assert!(gone.await, "the abandoned uploads ended upstream");
    assert_eq!(put().await.unwrap().status(), 200, "their places are free again");
}

/// One user's stalled uploads cannot take a route's places from its other users: the shipped
/// `concurrency_limits.uploads-per-user` lets each user have four in flight at once.
#[tokio::test]
async fn one_users_stalled_uploads_leave_the_route_to_its_other_users() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = web().await;
    let alice = stack.mocks.token("alice", "profile", 3600);
    let stalled_upload = |token: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(stack.bff.addr).await.unwrap();
        let head = format!(
            "PUT /api/uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\nslow"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_upload(alice.clone()).await);
    }
    let all = common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Catalog).in_flight == 4 });
    assert!(all.await, "four uploads wait on their client");
    // A fifth is refused at once, without waiting on its body.
    let mut fifth = stalled_upload(alice.clone()).await;
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut answer));
    let n = read.await.expect("answered at once").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("CONCURRENCY_LIMITED") && answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("uploads-per-user"), "the problem names the limit: {answer}");
    // Another user's upload goes through meanwhile.
    let put = |token: String| stack.http.put(stack.bff.url("/api/uploads")).bearer_auth(token).body("x").send();
    assert_eq!(put(stack.mocks.token("bob", "profile", 3600)).await.unwrap().status(), 200);
    // Uploads that end, finished or abandoned, give their places back.
    drop((stalled, fifth));
    let gone = common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Catalog).in_flight == 0 });
    assert!(gone.await, "the abandoned uploads ended upstream");
    for _ in 0..5 {
        assert_eq!(put(alice.clone()).await.unwrap().status(), 200);
    }
    let metrics = stack.admin_text("/metrics").await;
    let limited = r#"bff_rate_limit_requests_total{route="/api/uploads",limit="uploads-per-user",outcome="limited"} 1"#;
    assert!(metrics.contains(limited), "{metrics}");
}

/// Framings a request smuggler tries: each is refused, or read one way only (RFC 9112 §6.3), and
/// what goes upstream is framed by the gateway, never by the client's `Content-Length`.
#[tokio::test]
async fn smuggling_framings_are_refused_or_read_one_way() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = web().await;
    let exchange = |request: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(stack.bff.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        read.expect("the connection is closed after the answer").unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let head = |framing: &str| {
        format!("PUT /api/uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {}\r\n{framing}\r\n", stack.token())
    };
    // Both lengths: the chunks are the body, and the connection ends after the answer, so a
    // request hidden after a shorter `Content-Length` is never read as one.
    let hidden = "GET /api/catalog/products/SKU-0002 HTTP/1.1\r\nHost: bff\r\n\r\n";
    for framing in
        ["Content-Length: 5\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked\r\nContent-Length: 5"]
    {
        let answer = exchange(format!("{}\r\nb\r\nhello world\r\n0\r\n\r\n{hidden}", head(framing))).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{framing}: {answer}");
        assert!(answer.contains(r#""bytes":11"#), "{framing}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{framing}: one answer only: {answer}");
        let seen = stack.stats(Service::Catalog);
        assert_eq!(seen.last_path.as_deref(), Some("/uploads"), "the hidden request never went upstream");
        assert_eq!(seen.last_headers.get("content-length"), None, "{framing}: framed by the gateway");
    }
    let before = stack.stats(Service::Catalog).requests;
    for framing in [
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding : chunked",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 5",
        "Content-Length: +5",
        "X-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        let answer = exchange(format!("{}Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", head(framing))).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing}: {answer}");
    }
    // `chunked` last, which hyper reads, after a coding it hands on undecoded: the upstream
    // would be sent compressed bytes as the body, with nothing saying so. And `chunked` twice.
    let refused = [
        ("Transfer-Encoding: gzip, chunked", "501", "UNSUPPORTED_TRANSFER_CODING"),
        ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", "501", "UNSUPPORTED_TRANSFER_CODING"),
        ("Transfer-Encoding: chunked, chunked", "400", "INVALID_TRANSFER_ENCODING"),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "400", "INVALID_TRANSFER_ENCODING"),
    ];
    for (framing, status, code) in refused {
        let answer = exchange(format!("{}Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", head(framing))).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{framing}: {answer}");
        assert!(answer.contains(&format!(r#""code":"{code}""#)), "{framing}: {answer}");
    }
    assert_eq!(stack.stats(Service::Catalog).requests, before, "no refused framing reached the upstream");
}

/// What a client may not send upstream as a header may not arrive as a request trailer either:
/// some servers merge trailer fields into the headers.
#[tokio::test]
async fn a_clients_trailers_carry_no_identity_upstream() {
    let stack = web().await;
    let trailers = [
        ("X-User-Id", "1"),
        ("X-User-Scopes", "admin"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Cookie", "a=b"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Content-Digest", "sha-256=:x:"),
    ];
    let declared = trailers.map(|(name, _)| name).join(", ");
    let sent: String = trailers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "PUT /api/uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\
         Trailer: {declared}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n{sent}\r\n",
        stack.token()
    );
    let (status, body) = raw_http(stack.bff.addr, &request).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["bytes"], 5);
    assert_eq!(answer["trailers"], serde_json::json!({"content-digest": "sha-256=:x:"}), "what reached the upstream");
}

#[tokio::test]
async fn events_arrive_one_by_one_for_the_verified_user_only() {
    let stack = web().await;
    let response = stack
        .http
        .get(stack.bff.url("/api/notifications/events?count=3&interval_ms=300"))
        .bearer_auth(stack.token())
        .header("x-user-id", "7")
        .header("x-user-scopes", "admin")
        .header("x-partner-account", "other")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(!response.headers().contains_key("content-encoding"));
    let mut body = response.bytes_stream();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        // Each event as its own piece, as the service sent it: nothing held back to batch them.
        assert_eq!(chunk.matches("data: ").count(), 1, "{chunk:?}");
        events.push(chunk);
    }
    assert_eq!(events.len(), 3);
    for (seq, event) in events.iter().enumerate() {
        assert!(event.contains(&format!(r#""seq":{seq}"#)) && event.contains(r#""user":"42""#), "{event}");
    }
    let seen = stack.stats(Service::Notifications).last_headers;
    assert_eq!(seen.get("x-user-id").map(String::as_str), Some("42"));
    assert_eq!(seen.get("x-user-scopes").map(String::as_str), Some("orders profile"));
    assert!(!seen.contains_key("x-partner-account") && !seen.contains_key("authorization"), "{seen:?}");

    // A token without the route's scope.
    let token = stack.mocks.token("42", "orders", 600);
    let response = stack.http.get(stack.bff.url("/api/notifications/events")).bearer_auth(token).send().await.unwrap();
    common::problem(response, 403, "AUTH_INSUFFICIENT_SCOPE").await;
}

#[tokio::test]
async fn no_spelling_of_a_path_reaches_the_mocks_admin_routes() {
    // Resolved, these leave the route they were written for: refused, not routed elsewhere.
    const CLIMB_OUT: [&str; 5] = [
        "/api/catalog/products/../../_faults",
        "/api/catalog/products/%2e%2e/%2e%2e/_faults",
        "/api/catalog/products/%2E%2E/_stats",
        "/api/catalog/files/..",
        "/api/catalog/files/%2e%2e",
    ];
    let stack = web().await;
    for path in [
        "/api/catalog/products/../../_faults",
        "/api/catalog/products/%2e%2e/%2e%2e/_faults",
        "/api/catalog/products/%2E%2E/_stats",
        "/api/catalog/products/..%2f..%2f_faults",
        "/api/catalog/products/..%2F_stats",
        "/api/catalog/products/%5c..%5c_faults",
        "/api/catalog/products/..\\..\\_faults",
        "/api/catalog/products//_faults",
        "/api/catalog/products/.",
        "/api/catalog/files/..",
        "/api/catalog/files/%2e%2e",
        "/api/catalog/..%2f_faults",
        "/api/catalog/%2e%2e/_faults",
        // Broken escapes that one decoding pass turns into `%2e%2e`, dots to an upstream that
        // decodes once more.
        "/api/catalog/products/%2%65%2%65/_faults",
        "/api/catalog/%2%45%2%45/_stats",
        // Dots with path parameters, which Tomcat and Spring resolve as `..`.
        "/api/catalog/products/..;/..;/_faults",
        "/api/catalog/products/..%3bx/_stats",
        "/api/../_faults",
        "//_faults",
        "/_faults",
        "/_stats",
    ] {
        let calls = stack.stats(Service::Catalog).requests;
        let request = format!("GET {path} HTTP/1.1\r\nHost: bff\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_http(stack.bff.addr, &request).await;
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
        if path.contains("..;") || path.contains("..%3b") {
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("INVALID_PATH") && body.contains("with parameters"), "{path}: {body}");
        }
        if path.contains("%2%") {
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("INVALID_PATH") && body.contains("not followed by two hex digits"), "{path}: {body}");
        }
        if CLIMB_OUT.contains(&path) {
            assert_eq!(status, 400, "{path}: {body}");
            assert!(
                body.contains("INVALID_PATH") && body.contains("climbs out of the route `/api/catalog/"),
                "{path}: {body}"
            );
        }
        let stats = stack.stats(Service::Catalog);
        if stats.requests == calls {
            assert!(body.contains(r#""code":"#), "{path}: not the gateway's problem: {body}");
            continue;
        }
        // Normalised to a path inside a route (`products//_faults` is `products/_faults`): the
        // catalog was asked for a product, never for its admin routes.
        let forwarded = stats.last_path.unwrap_or_default();
        assert!(forwarded.starts_with("/products/") && !forwarded.contains(".."), "{path} became {forwarded}");
    }
}

#[tokio::test]
async fn a_route_over_a_handler_route_stops_the_bff_naming_both() {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/web/*\"\nupstream = \"catalog\"\naccess = \"public\"\n",
        bff_demo::WEB_CONFIG
    );
    let source = bff_core::config::ConfigSource { name: "web.toml".into(), text: config };
    let mut secret = bff_core::config::Overrides::default();
    secret.set("oidc.client_secret", "s", "test");
    let config = bff_core::config::load(&source, &secret).unwrap();
    let gateway = bff_core::Gateway::builder(config).source("web.toml").build().await.unwrap();
    let error = bff_web::app(&gateway).unwrap_err().to_string();
    let added = bff_demo::WEB_CONFIG.matches("[[proxy]]").count();
    assert!(error.contains("web.toml") && error.contains(&format!("proxy[{added}].path")), "{error}");
    assert!(error.contains(&format!("`/web/*` (proxy[{added}])")) && error.contains("handler route `/web/"), "{error}");
}

#[tokio::test]
async fn a_weighted_split_shares_requests_and_a_matched_header_picks_one_upstream() {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/split/{{*rest}}\"\nmethods = [\"GET\"]\nupstream = {{ catalog = 90, inventory = 10 }}\n\
         rewrite = \"/products/{{rest}}\"\naccess = \"public\"\n\
         [[proxy]]\npath = \"/api/split/{{*rest}}\"\nmethods = [\"GET\"]\nupstream = \"inventory\"\n\
         match_header = {{ \"x-canary\" = \"1\" }}\nrewrite = \"/products/{{rest}}\"\naccess = \"public\"\n",
        bff_demo::WEB_CONFIG
    );
    let stack = StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app).start().await;
    // Calls per upstream, as the gateway counts them (the inventory answers these paths 404).
    let counts = || async {
        let metrics = stack.admin_text("/metrics").await;
        let calls = |upstream: &str| -> u64 {
            let prefix = format!(r#"bff_upstream_requests_total{{upstream="{upstream}","#);
            let lines = metrics.lines().filter(|l| l.starts_with(&prefix));
            lines.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() as u64
        };
        (calls("catalog"), calls("inventory"))
    };
    let (catalog, inventory) = counts().await;
    for _ in 0..200 {
        stack.http.get(stack.bff.url("/api/split/SKU-0001")).send().await.unwrap();
    }
    let (after_catalog, after_inventory) = counts().await;
    let (to_catalog, to_inventory) = (after_catalog - catalog, after_inventory - inventory);
    assert_eq!(to_catalog + to_inventory, 200);
    // 10% of 200 is 20, with a standard deviation of about 4: far from either bound.
    assert!((1..=50).contains(&to_inventory), "{to_inventory} of 200 to the canary");
    for _ in 0..20 {
        let request = stack.http.get(stack.bff.url("/api/split/SKU-0001")).header("x-canary", "1");
        request.send().await.unwrap();
    }
    assert_eq!(counts().await, (after_catalog, after_inventory + 20), "the header sends every request to the canary");
}

#[tokio::test]
async fn a_websocket_is_tunnelled_for_the_verified_user_and_closed_on_shutdown() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut stack =
        StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).set("server.shutdown_grace", "1s").start().await;
    let url = format!("ws://{}/api/notifications/ws", stack.bff.addr);
    let open = |token: Option<String>| {
        let mut request = url.as_str().into_client_request().unwrap();
        if let Some(token) = token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request.headers_mut().insert("x-user-id", "7".parse().unwrap());
        let addr = stack.bff.addr;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    // No token: refused before anything reaches the service.
    match open(None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("opened without a token: {other:?}"),
    }
    let (mut socket, response) = open(Some(stack.token())).await.expect("the upgrade");
    assert_eq!(response.status(), 101);
    let hello = socket.next().await.unwrap().unwrap();
    assert_eq!(hello, Message::Text(r#"{"user":"42"}"#.into()), "the service saw the verified user, not x-user-id: 7");
    socket.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::Text("hi".into()));
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::Binary(vec![1, 2, 3].into()));
    // The tunnel is an open connection (the refused one closes on its own, soon).
    let counted = common::eventually(Duration::from_secs(10), || async {
        stack.admin_text("/metrics").await.lines().any(|l| l == "bff_connections_open 1")
    })
    .await;
    assert!(counted, "the tunnel is not counted as one open connection");

    // Shutdown: the tunnel is closed once the grace period (1 s here) is over.
    stack.bff.begin_shutdown();
    let ended =
        tokio::time::timeout(Duration::from_secs(20), async { while let Some(Ok(_)) = socket.next().await {} }).await;
    assert!(ended.is_ok(), "the tunnel outlived the shutdown");
}

/// A live connection holds its place under the shipped `concurrency_limits.live-per-user` (eight
/// per user) for as long as it is open: a WebSocket until its tunnel closes, an event stream
/// until it ends, not just until their answers' heads.
#[tokio::test]
async fn a_users_live_connections_hold_their_places_until_they_close() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let stack = web().await;
    let alice = stack.mocks.token("alice", "profile", 3600);
    let url = format!("ws://{}/api/notifications/ws", stack.bff.addr);
    let open = |token: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let addr = stack.bff.addr;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    let events = |token: &str| {
        let url = stack.bff.url("/api/notifications/events?count=100&interval_ms=10000");
        stack.http.get(url).bearer_auth(token).send()
    };
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let (mut socket, _) = open(&alice).await.expect("the upgrade");
        socket.next().await.unwrap().expect("the service's hello: the tunnel is open");
        sockets.push(socket);
    }
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut stream = events(&alice).await.unwrap();
        assert_eq!(stream.status(), 200);
        stream.chunk().await.unwrap().expect("the first event: the stream is open");
        streams.push(stream);
    }
    // Eight open: a ninth of either kind is refused.
    match open(&alice).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a ninth live connection opened: {other:?}"),
    }
    common::problem(events(&alice).await.unwrap(), 429, "CONCURRENCY_LIMITED").await;
    // Another user has places of its own.
    let (mut other, _) = open(&stack.mocks.token("bob", "profile", 3600)).await.expect("bob's socket");
    other.next().await.unwrap().unwrap();

    // A socket closed, and a stream dropped, give their places back.
    let mut socket = sockets.pop().unwrap();
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    drop(streams.pop());
    // Both places come back once the gateway sees the ends: alice's six and bob's one are left.
    let back =
        common::eventually(Duration::from_secs(10), || async { places_held(&stack, "live-per-user").await == Some(7) });
    assert!(back.await, "the closed socket's and the dropped stream's places came back");
    let mut reopened = Vec::new();
    for _ in 0..2 {
        let stream = events(&alice).await.unwrap();
        assert_eq!(stream.status(), 200, "a place that came back");
        reopened.push(stream);
    }
    common::problem(events(&alice).await.unwrap(), 429, "CONCURRENCY_LIMITED").await;
}

/// `bff_concurrency_in_flight{limit}` on the stack's admin listener.
async fn places_held(stack: &Stack, limit: &str) -> Option<u64> {
    let series = format!("bff_concurrency_in_flight{{limit=\"{limit}\"}} ");
    let metrics = stack.admin_text("/metrics").await;
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
}

/// A WebSocket under two concurrency limits, one by address (checked before the credentials) and
/// one by user (after), holds its places under both for the tunnel's life.
#[tokio::test]
async fn a_websocket_holds_its_places_under_every_limit_that_covers_it() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app)
        .set("concurrency_limits.per-address.key", "ip")
        .set("concurrency_limits.per-address.max_in_flight", "2")
        .set("concurrency_limits.per-address.routes", r#"["/api/notifications/ws"]"#)
        .set("concurrency_limits.live-per-user.max_in_flight", "3")
        .start()
        .await;
    let url = format!("ws://{}/api/notifications/ws", stack.bff.addr);
    let open = |user: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        let token = stack.mocks.token(user, "profile", 3600);
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let addr = stack.bff.addr;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    let refused = |opened: Result<_, tokio_tungstenite::tungstenite::Error>| match opened {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status() == 429,
        _ => false,
    };
    let (mut first, _) = open("alice").await.expect("alice's first");
    let (mut second, _) = open("bob").await.expect("bob's first");
    first.next().await.unwrap().unwrap();
    second.next().await.unwrap().unwrap();
    // Two open from this address: a third is refused, whoever asks.
    assert!(refused(open("carol").await.map(|_| ())), "the address's limit let a third through");
    drop(second);
    // Bob's gone: a place by address is back, and alice's user limit (3) has room.
    let back =
        common::eventually(Duration::from_secs(10), || async { places_held(&stack, "per-address").await == Some(1) });
    assert!(back.await, "bob's place came back");
    let (mut again, _) = open("alice").await.expect("alice's second, in bob's place");
    again.next().await.unwrap().unwrap();
}

#[tokio::test]
async fn a_websocket_opens_over_http2_with_an_extended_connect_and_closes_on_shutdown() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let mut stack =
        StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).set("server.shutdown_grace", "1s").start().await;
    let mut send = http2(stack.bff.addr).await;
    // An answer first: the server's SETTINGS (which allow the extended CONNECT) are in by then.
    let plain = http::Request::get(format!("http://{}/api/catalog/products/SKU-0001", stack.bff.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(plain).await.unwrap().status(), 200);
    let mut open = |path: &str, token: Option<String>| {
        let mut request = http::Request::connect(format!("http://{}{path}", stack.bff.addr))
            .header("sec-websocket-version", "13")
            .header("x-user-id", "7")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        if let Some(token) = token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        send.send_request(request)
    };
    // No token: refused before anything reaches the service.
    let refused = open("/api/notifications/ws", None).await.unwrap();
    assert_eq!(refused.status(), 401);
    // A route without WebSockets takes no CONNECT.
    let refused = open("/api/catalog/products/SKU-0001", None).await.unwrap();
    assert_eq!(refused.status(), 400);

    let response = open("/api/notifications/ws", Some(stack.token())).await.unwrap();
    assert_eq!(response.status(), 200, "RFC 8441 answers an extended CONNECT with 200");
    assert!(!response.headers().contains_key("sec-websocket-accept"), "{:?}", response.headers());
    let stream = hyper::upgrade::on(response).await.expect("the stream as a tunnel");
    let mut socket =
        tokio_tungstenite::WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(stream), Role::Client, None)
            .await;
    let hello = socket.next().await.unwrap().unwrap();
    assert_eq!(hello, Message::Text(r#"{"user":"42"}"#.into()), "the service saw the verified user, not x-user-id: 7");
    socket.send(Message::Text("over h2".into())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::Text("over h2".into()));
    socket.send(Message::Binary(vec![9, 8, 7].into())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::Binary(vec![9, 8, 7].into()));

    // Shutdown: the connection waits for the tunnel's stream until the grace period (1 s here) is
    // over, then closes it.
    stack.bff.begin_shutdown();
    let ended =
        tokio::time::timeout(Duration::from_secs(20), async { while let Some(Ok(_)) = socket.next().await {} }).await;
    assert!(ended.is_ok(), "the tunnel outlived the shutdown");
}

/// bff-web with a prefix route to the catalog's root, and a per-address limit on the files route.
async fn web_with_legacy_and_a_limit() -> Stack {
    let config = format!(
        "{}\n[[proxy]]\npath = \"/api/legacy/*\"\nupstream = \"catalog\"\nrewrite = \"/\"\naccess = \"public\"\n",
        bff_demo::WEB_CONFIG
    );
    StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app)
        .set("rate_limits.files.key", "ip")
        .set("rate_limits.files.rate", "2")
        .set("rate_limits.files.per", "1h")
        .set("rate_limits.files.routes", r#"["/api/catalog/files/{bytes}"]"#)
        .set("routes./api/catalog/files/{bytes}.deadline", "1500ms")
        .start()
        .await
}

#[tokio::test]
async fn prefixes_redirects_expect_continue_and_limits_on_passthrough_routes() {
    let stack = web_with_legacy_and_a_limit().await;
    // A prefix: the rest of the path appended to the rewrite.
    let response = stack.http.get(stack.bff.url("/api/legacy/products/SKU-0001")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // A redirect reaches the client as the upstream sent it, not followed.
    let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(stack.bff.url("/api/legacy/moved/SKU-0001")).send().await.unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(response.headers()["location"], "/products/SKU-0001");

    // `Expect: 100-continue`: the BFF says continue, then the body goes up.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(stack.bff.addr).await.unwrap();
    let head = format!(
        "PUT /api/uploads HTTP/1.1\r\nHost: bff\r\nAuthorization: Bearer {}\r\nContent-Length: 5\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        stack.token()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0_u8; 25];
    socket.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    socket.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""bytes":5"#), "{answer}");

    // A rate limit names a passthrough route by its pattern.
    for _ in 0..2 {
        let response = stack.http.get(stack.bff.url("/api/catalog/files/10")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = stack.http.get(stack.bff.url("/api/catalog/files/10")).send().await.unwrap();
    common::problem(response, 429, "RATE_LIMITED").await;
}

#[tokio::test]
async fn trailers_reach_an_http2_client() {
    use http_body_util::BodyExt;
    let stack = web().await;
    let mut send = http2(stack.bff.addr).await;
    let request = http::Request::get(format!("http://{}/api/catalog/files/100000?trailers=true", stack.bff.addr))
        .header("te", "trailers")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("the upstream's trailers");
    assert_eq!(trailers["x-file-bytes"], "100000");
    assert_eq!(collected.to_bytes().len(), 100_000);
}

/// A request that has passed through BFFs more times than any chain of them needs is a loop (a
/// route pointing back at a BFF): refused with `508`, never forwarded again.
#[tokio::test]
async fn a_request_looping_through_bffs_is_refused() {
    let stack = web().await;
    let request = |hops: usize| {
        let via = vec!["1.1 bff"; hops].join(", ");
        format!("GET /api/catalog/products/SKU-0001 HTTP/1.1\r\nHost: bff\r\nVia: {via}\r\nConnection: close\r\n\r\n")
    };
    let (status, body) = raw_http(stack.bff.addr, &request(8)).await;
    assert_eq!(status, 200, "a chain of eight BFFs is not a loop: {body}");
    assert_eq!(stack.stats(Service::Catalog).last_headers["via"], format!("{}, 1.1 bff", ["1.1 bff"; 8].join(", ")));
    let calls = stack.stats(Service::Catalog).requests;
    let (status, body) = raw_http(stack.bff.addr, &request(9)).await;
    assert!(status == 508 && body.contains(r#""code":"LOOP_DETECTED""#), "{status} {body}");
    assert_eq!(stack.stats(Service::Catalog).requests, calls, "not forwarded");
}

/// An upstream behind a passthrough route may set the browser's cookies, but not the BFF's own
/// session cookies: it cannot put a session of its choosing in the browser.
#[tokio::test]
async fn an_upstream_sets_its_cookies_but_not_the_sessions() {
    let stack = web().await;
    let cookies = "theme=dark,__Host-bff-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA,__Host-bff-login=x";
    let response =
        stack.http.get(stack.bff.url(&format!("/api/catalog/files/10?cookies={cookies}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let set: Vec<&str> = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set, ["theme=dark; Path=/"]);
}

/// An HTTP/2 client that sends each cookie as a field of its own (as browsers do, RFC 9113
/// §8.2.3) reaches an HTTP/1.1 upstream with them on one `Cookie` line, in their order.
#[tokio::test]
async fn an_http2_clients_cookie_fields_reach_the_upstream_as_one_line() {
    let stack = web().await;
    let mut send = http2(stack.bff.addr).await;
    let request = http::Request::get(format!("http://{}/api/catalog/products/SKU-0001", stack.bff.addr))
        .header("cookie", "theme=dark")
        .header("cookie", "lang=en; consent=1")
        .header("cookie", "ab=b")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = stack.stats(Service::Catalog);
    assert_eq!(seen.last_version, "HTTP/1.1");
    assert_eq!(seen.last_headers.get("cookie").map(String::as_str), Some("theme=dark; lang=en; consent=1; ab=b"));
}

/// A route for one host, of another path shape than the shipped one it takes requests from.
const ROUTE: &str = "/api/{section}/{kind}/{sku}";

#[tokio::test]
async fn a_route_for_a_host_comes_before_any_host_routes_with_its_own_access_limits_and_settings() {
    // `/api/{section}/{kind}/{sku}` on one host, to the inventory, for signed-in callers, one a
    // minute each; the shipped `/api/catalog/products/{*rest}` (public, to the catalog) for every
    // other host.
    let config = format!(
        "{}\n[[proxy]]\npath = \"{ROUTE}\"\nhost = \"canary.example.com\"\nupstream = \"inventory\"\n\
         rewrite = \"/stock/{{sku}}\"\naccess = \"authenticated\"\n\
         [rate_limits.canary]\nkey = \"user\"\nrate = 1\nper = \"60s\"\nroutes = [\"{ROUTE}\"]\n\
         [routes.\"{ROUTE}\"]\ndeadline = \"2s\"\n",
        bff_demo::WEB_CONFIG
    );
    let stack = StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app).start().await;
    let get = |host: &str, token: Option<String>| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        format!("GET /api/catalog/products/SKU-0001 HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
    };
    let (inventory, catalog) = (stack.stats(Service::Inventory).requests, stack.stats(Service::Catalog).requests);
    let (status, body) = raw_http(stack.bff.addr, &get("www.example.com", None)).await;
    assert!(status == 200 && body.contains(r#""sku":"SKU-0001""#), "{status} {body}");
    // The host's route, though the any-host route's path is more specific: its access first.
    let (status, body) = raw_http(stack.bff.addr, &get("Canary.Example.com:8443", None)).await;
    assert!(status == 401 && body.contains("AUTH_REQUIRED"), "{status} {body}");
    let token = stack.mocks.token("42", "profile", 600);
    let (status, body) = raw_http(stack.bff.addr, &get("canary.example.com", Some(token.clone()))).await;
    assert!(status == 200 && body.contains("SKU-0001"), "{status} {body}");
    assert_eq!(
        stack.stats(Service::Inventory).requests,
        inventory + 1,
        "sent to the host route's upstream: {status} {body}"
    );
    assert_eq!(stack.stats(Service::Inventory).last_path.as_deref(), Some("/stock/SKU-0001"));
    assert_eq!(stack.stats(Service::Catalog).requests, catalog + 1, "only the other host's request");
    // The limit named by the route's path.
    let (status, body) = raw_http(stack.bff.addr, &get("canary.example.com", Some(token))).await;
    assert!(status == 429 && body.contains("RATE_LIMITED"), "{status} {body}");
    let metrics = stack.admin_text("/metrics").await;
    assert!(metrics.contains(&format!(r#"route="{ROUTE}""#)), "counted under its path: {metrics}");
}

#[tokio::test]
async fn a_request_has_one_host_and_an_absolute_target_names_it() {
    // The shipped routes, and `ROUTE` for `canary.example.com` only, for signed-in callers: which
    // of the two answers says which host routing read.
    let config = format!(
        "{}\n[[proxy]]\npath = \"{ROUTE}\"\nhost = \"canary.example.com\"\nupstream = \"inventory\"\n\
         rewrite = \"/stock/{{sku}}\"\naccess = \"authenticated\"\n",
        bff_demo::WEB_CONFIG
    );
    let stack = StackBuilder::new(Box::leak(config.into_boxed_str()), bff_web::app).start().await;
    let get = |target: &str, version: &str, hosts: &[&str]| {
        let hosts: String = hosts.iter().map(|h| format!("Host: {h}\r\n")).collect();
        format!("GET {target} HTTP/{version}\r\n{hosts}Connection: close\r\n\r\n")
    };
    let path = "/api/catalog/products/SKU-0001";
    let catalog = stack.stats(Service::Catalog).requests;
    for (request, why) in [
        (get(path, "1.1", &["www.example.com", "canary.example.com"]), "more than one `Host`"),
        (get(path, "1.1", &["www.example.com", "www.example.com"]), "more than one `Host`"),
        (get(path, "1.1", &[]), "must have a `Host`"),
        (get(path, "1.1", &["user@canary.example.com"]), "not a host"),
        (get(path, "1.1", &["www.example.com:80x"]), "not a host"),
        (get(&format!("http://user@www.example.com{path}"), "1.1", &["www.example.com"]), "user information"),
    ] {
        let (status, body) = raw_http(stack.bff.addr, &request).await;
        assert!(status == 400 && body.contains("INVALID_HOST") && body.contains(why), "{request:?}: {status} {body}");
    }
    assert_eq!(stack.stats(Service::Catalog).requests, catalog, "none of them forwarded");
    // An HTTP/1.0 request may name no host: any host's route takes it.
    let (status, body) = raw_http(stack.bff.addr, &get(path, "1.0", &[])).await;
    assert!(status == 200 && body.contains("SKU-0001"), "{status} {body}");
    // In the absolute form the target names the host, whatever `Host` says: the canary's route
    // (its access check), then the other way round the any-host route.
    let canary = get(&format!("http://canary.example.com{path}"), "1.1", &["www.example.com"]);
    let (status, body) = raw_http(stack.bff.addr, &canary).await;
    assert!(status == 401 && body.contains("AUTH_REQUIRED"), "{status} {body}");
    // A fully qualified name (a trailing dot) is the same host, as DNS reads it.
    let (status, body) = raw_http(stack.bff.addr, &get(path, "1.1", &["canary.example.com."])).await;
    assert!(status == 401 && body.contains("AUTH_REQUIRED"), "{status} {body}");
    let www = get(&format!("http://www.example.com{path}"), "1.1", &["canary.example.com"]);
    let (status, body) = raw_http(stack.bff.addr, &www).await;
    assert!(status == 200 && body.contains("SKU-0001"), "{status} {body}");
    assert_eq!(stack.stats(Service::Catalog).requests, catalog + 2);

    // Over HTTP/2, a `Host` naming another host than `:authority` is refused; the same host,
    // in capitals, is not.
    let mut send = http2(stack.bff.addr).await;
    for (host, status) in [("canary.example.com", 400), ("WWW.example.com", 200)] {
        let request = http::Request::get(format!("http://www.example.com{path}"))
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), status, "Host {host} with :authority www.example.com");
    }
}

/// With `server.allowed_hosts`, a request for another host, or for none, is a `421` problem that
/// reaches no upstream, on every kind of route (the login's redirect URI is built from the host),
/// however the host is named; the hosts listed are answered in any case and with any port, and
/// the admin listener answers any host.
#[tokio::test]
async fn only_the_allowed_hosts_are_answered() {
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app)
        .set("server.allowed_hosts", r#"["bff.example.com", "*.apps.example", "127.0.0.1"]"#)
        .start()
        .await;
    let get = |target: &str, version: &str, host: Option<&str>| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET {target} HTTP/{version}\r\n{host}Connection: close\r\n\r\n")
    };
    let path = "/api/catalog/products/SKU-0001";
    let catalog = stack.stats(Service::Catalog).requests;
    let absolute = format!("http://evil.example{path}");
    for (target, version, host) in [
        (path, "1.1", Some("evil.example")),
        (path, "1.1", Some("bff.example.com.evil.example")),
        (path, "1.1", Some("apps.example")),
        (path, "1.1", Some("a.b.apps.example")),
        (path, "1.1", Some("127.0.0.2:8080")),
        (path, "1.1", Some("")),
        (path, "1.0", None),
        (absolute.as_str(), "1.1", Some("bff.example.com")),
        ("/bff/login", "1.1", Some("evil.example")),
        ("/web/home", "1.1", Some("evil.example")),
        ("/healthz", "1.1", Some("evil.example")),
    ] {
        let (status, body) = raw_http(stack.bff.addr, &get(target, version, host)).await;
        assert!(status == 421 && body.contains("HOST_NOT_ALLOWED"), "{target} {host:?}: {status} {body}");
        assert!(body.contains("server.allowed_hosts"), "the answer names the key: {body}");
    }
    assert_eq!(stack.stats(Service::Catalog).requests, catalog, "none of them forwarded");

    for host in ["bff.example.com", "BFF.Example.COM:8443", "bff.example.com.", "a.apps.example", "127.0.0.1:1234"] {
        let (status, body) = raw_http(stack.bff.addr, &get(path, "1.1", Some(host))).await;
        assert!(status == 200 && body.contains("SKU-0001"), "{host}: {status} {body}");
    }
    let (status, _) = raw_http(stack.admin.addr, &get("/metrics", "1.1", Some("evil.example"))).await;
    assert_eq!(status, 200, "the admin listener answers any host");

    // Over HTTP/2 the host is `:authority`'s.
    let mut send = http2(stack.bff.addr).await;
    for (authority, status) in [("evil.example", 421), ("x.apps.example", 200)] {
        let request = http::Request::get(format!("http://{authority}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), status, ":authority {authority}");
    }
}
