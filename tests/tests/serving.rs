//! What one client may hold: connections, time and header bytes; and how the server stops.

mod common;

use std::time::Duration;

use bff_core::Signal;
use bff_core::testing::{RawH2, frame};
use common::{StackBuilder, latency};
use services_mock::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

/// Reads until the server closes the connection; how long that took, or `None` past `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_timeout() {
    let stack = mobile().set("server.header_read_timeout", "1s").start().await;
    let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\nX-Half: aaa").await.unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(20)).await;
    let closed = closed.expect("the half-sent head was still open after 20 s");
    assert!(closed >= Duration::from_millis(900), "closed after {closed:?}, before the timeout");
}

/// A connection that sends nothing, or only HTTP/2's preface, is closed when its first request
/// is late (`header_read_timeout`), not after the idle timeout.
#[tokio::test]
async fn a_silent_connection_or_a_lone_preface_is_closed_at_the_header_timeout() {
    let stack = mobile().set("server.header_read_timeout", "1s").set("server.idle_timeout", "30s").start().await;
    for preface in [false, true] {
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        if preface {
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        }
        // Well under the idle timeout, with room for a loaded machine.
        let closed = closed_within(&mut stream, Duration::from_secs(20)).await;
        let closed = closed.unwrap_or_else(|| panic!("preface {preface}: still open after 20 s"));
        assert!(closed >= Duration::from_millis(900), "preface {preface}: closed after {closed:?}, before the timeout");
    }
    let metrics = stack.admin_text("/metrics").await;
    assert!(metrics.contains(r#"bff_connections_closed_total{reason="no_request"} 2"#), "{metrics}");
}

/// An HTTP/2 connection asks once, then only pings: PINGs are not requests, so it is closed
/// after the idle timeout.
#[tokio::test]
async fn pings_do_not_keep_a_connection_without_requests_open() {
    let stack = mobile().set("server.idle_timeout", "3s").start().await;
    let mut h2 = RawH2::handshake(TcpStream::connect(stack.bff.addr).await.unwrap(), &[]).await.unwrap();
    h2.get(1, "/healthz", &[]).await.unwrap();
    loop {
        let frame = h2.next().await.unwrap().expect("open");
        if frame.stream == 1 && frame.flags & frame::END_STREAM != 0 {
            break;
        }
    }
    let answered = Instant::now();
    let mut pings = 0u64;
    let gone = loop {
        match timeout(Duration::from_millis(500), h2.next()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => break answered.elapsed(),
            Err(_) => {
                pings += 1;
                if h2.ping(pings.to_be_bytes()).await.is_err() {
                    break answered.elapsed();
                }
            }
        }
        assert!(answered.elapsed() < Duration::from_secs(30), "still open after 30 s of pings");
    };
    assert!(gone >= Duration::from_millis(2_900), "closed after {gone:?}, before the idle timeout");
    assert!(pings >= 4, "{pings} pings");
}

/// `streams` streams, each opened with the header block `block` (a whole request) and then
/// `then(stream)`, as one write.
fn flood(streams: u32, block: &[u8], then: impl Fn(u32) -> Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for stream in (0..streams).map(|i| 2 * i + 1) {
        bytes.extend(frame::encode(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, block));
        bytes.extend(then(stream));
    }
    bytes
}

/// Opens an HTTP/2 connection, writes `bytes` on it, and reads the server's frames until it
/// closes: its `GOAWAY` error code (`None` when it sent none) and how many streams it reset.
async fn sent_away(stack: &common::Stack, bytes: &[u8]) -> (Option<u32>, usize) {
    let mut h2 = RawH2::handshake(TcpStream::connect(stack.bff.addr).await.unwrap(), &[]).await.unwrap();
    // A write error is the server closing while the flood is still being written.
    let _ = h2.write_raw(bytes).await;
    let frames = timeout(Duration::from_secs(60), h2.until_closed())
        .await
        .expect("the connection still open 60 s after the flood")
        .unwrap();
    let goaway = frames.iter().find(|f| f.kind == frame::GOAWAY).and_then(|f| f.error_code());
    (goaway, frames.iter().filter(|f| f.kind == frame::RST_STREAM).count())
}

/// The BFF still answers a new client.
async fn still_serves(stack: &common::Stack) {
    assert_eq!(stack.http.get(stack.bff.url("/healthz")).send().await.unwrap().status(), 200);
}

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once never count against
/// `h2_max_concurrent_streams`, so a client could make the server start work without end. The
/// connection is closed with `ENHANCE_YOUR_CALM`, and the BFF serves the next client.
#[tokio::test]
async fn a_rapid_reset_flood_is_sent_away() {
    let stack = mobile().start().await;
    let get = bff_core::testing::header_block("/healthz", &[]);
    let cancel = |stream| frame::encode(frame::RST_STREAM, 0, stream, &frame::CANCEL.to_be_bytes());
    let (goaway, _) = sent_away(&stack, &flood(5_000, &get, cancel)).await;
    assert_eq!(goaway, Some(frame::ENHANCE_YOUR_CALM));
    still_serves(&stack).await;
}

/// What follows each stream's request in a flood, given the stream's id.
type After = Box<dyn Fn(u32) -> Vec<u8>>;

/// MadeYouReset (CVE-2025-8671): the client makes the server reset each stream itself, which
/// rapid reset's count does not see: by a `WINDOW_UPDATE` of 0 on a stream, `DATA` after its end,
/// or a request whose body is shorter than its `content-length`. Each connection is closed after
/// a bounded number of such streams: at the first (the first two are connection errors in h2),
/// or with `ENHANCE_YOUR_CALM` once the server's own resets (`PROTOCOL_ERROR`, one a stream)
/// pass its count.
#[tokio::test]
async fn a_flood_of_streams_the_server_must_reset_is_sent_away() {
    let stack = mobile().start().await;
    let get = bff_core::testing::header_block("/healthz", &[]);
    let short = bff_core::testing::header_block("/healthz", &[("content-length", "5")]);
    let ways: [(&str, After); 2] = [
        ("a zero window update", Box::new(|stream| frame::encode(frame::WINDOW_UPDATE, 0, stream, &[0; 4]))),
        ("data after the end", Box::new(|stream| frame::encode(frame::DATA, 0, stream, b"x"))),
    ];
    for (way, then) in ways {
        let (goaway, resets) = sent_away(&stack, &flood(5_000, &get, then)).await;
        assert!(
            matches!(goaway, Some(frame::PROTOCOL_ERROR | frame::ENHANCE_YOUR_CALM)),
            "{way}: GOAWAY {goaway:?} after {resets} resets of its own"
        );
        assert!(resets <= 1_100, "{way}: the server reset {resets} streams before it closed the connection");
    }
    // The one kind h2 answers stream by stream: closed by the count, not at the first.
    let (goaway, resets) = sent_away(&stack, &flood(5_000, &short, |_| Vec::new())).await;
    assert_eq!(goaway, Some(frame::ENHANCE_YOUR_CALM), "after {resets} resets");
    assert!((100..=1_100).contains(&resets), "the server reset {resets} streams before it closed the connection");
    still_serves(&stack).await;
}

/// An HTTP/2 connection whose answer waits for a window that never opens: a request in flight.
async fn busy_connection(addr: std::net::SocketAddr) -> RawH2<TcpStream> {
    let mut h2 =
        RawH2::handshake(TcpStream::connect(addr).await.unwrap(), &[(frame::INITIAL_WINDOW_SIZE, 0)]).await.unwrap();
    h2.get(1, "/healthz", &[]).await.unwrap();
    loop {
        let frame = h2.next().await.unwrap().expect("open");
        assert_ne!(frame.kind, frame::DATA);
        if frame.kind == frame::HEADERS {
            return h2;
        }
    }
}

/// Completes when the server closes `stream` (within 10 s).
async fn closed_soon(stream: &mut TcpStream) -> bool {
    closed_within(stream, Duration::from_secs(10)).await.is_some()
}

async fn healthz_on(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(timeout(Duration::from_secs(10), stream.read(&mut buf)).await, Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200"))
}

#[tokio::test]
async fn at_the_connection_cap_an_idle_connection_makes_room_and_busy_ones_do_not() {
    let stack = mobile().set("server.max_connections", "4").set("server.max_connections_per_ip", "10").start().await;
    let mut busy = Vec::new();
    for _ in 0..4 {
        busy.push(busy_connection(stack.bff.addr).await);
    }
    // All four have a request in flight: the fifth is closed at once, not left hanging.
    let mut fifth = TcpStream::connect(stack.bff.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await;
    assert!(closed_soon(&mut fifth).await, "the fifth connection was left hanging");
    // One lets go; its place goes to a client that asks once, then sits idle.
    drop(busy.pop());
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut idle = loop {
        // The server notices the close on its own time.
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        if healthz_on(&mut stream).await {
            break stream;
        }
        assert!(Instant::now() < give_up, "no connection was served after one was released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // At the cap again: the idle one is closed to make room, and the new one is served.
    let mut newcomer = TcpStream::connect(stack.bff.addr).await.unwrap();
    assert!(healthz_on(&mut newcomer).await, "refused while an idle connection held a place");
    assert!(closed_soon(&mut idle).await, "the idle connection was not closed");
    let metrics = stack.admin_text("/metrics").await;
    for line in [
        r#"bff_connections_refused_total{reason="max_connections"} 1"#,
        r#"bff_connections_closed_total{reason="evicted"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    drop(busy);
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let stack = mobile().set("server.max_connections", "100").set("server.max_connections_per_ip", "2").start().await;
    let busy = [busy_connection(stack.bff.addr).await, busy_connection(stack.bff.addr).await];
    let mut third = TcpStream::connect(stack.bff.addr).await.unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: bff\r\n\r\n").await;
    assert!(closed_soon(&mut third).await, "a third connection from the address was let in");
    let metrics = stack.admin_text("/metrics").await;
    let line = r#"bff_connections_refused_total{reason="max_connections_per_ip"} 1"#;
    assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    drop(busy);
}

/// The value of a metric line `series value`, if present.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Connections that open a zero window and ask for a public document a hundred times each
/// (the flood that pinned 700 MB): each is held to its unsent budget, the rest of its streams
/// are refused, and the bytes are let go when it closes.
#[tokio::test]
async fn a_zero_window_flood_is_held_to_the_unsent_budget() {
    const CONNECTIONS: usize = 20;
    const BUDGET: usize = 256 * 1024;
    let stack = StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
        .set("server.h2_max_unsent_bytes", &BUDGET.to_string())
        // All hundred streams reach the budget (the default stream limit would refuse some first).
        .set("server.h2_max_concurrent_streams", "100")
        .start()
        .await;
    let document = bff_partner::openapi_json(2).unwrap().len();
    let mut floods = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        let mut h2 = RawH2::handshake(stream, &[(frame::INITIAL_WINDOW_SIZE, 0)]).await.unwrap();
        for stream in (1..200).step_by(2) {
            h2.get(stream, "/v2/openapi.json", &[]).await.unwrap();
        }
        floods.push(h2);
    }
    let (mut answered, mut refused) = (0, 0);
    for h2 in &mut floods {
        let mut seen = 0;
        while seen < 100 {
            let frame = h2.next().await.unwrap().expect("open");
            match frame.kind {
                frame::HEADERS => answered += 1,
                frame::RST_STREAM if frame.error_code() == Some(frame::REFUSED_STREAM) => refused += 1,
                frame::DATA => panic!("data into a zero window"),
                _ => continue,
            }
            seen += 1;
        }
    }
    let metrics = stack.admin_text("/metrics").await;
    let unsent = metric(&metrics, "bff_connection_unsent_bytes").expect("the unsent gauge") as usize;
    // A stream is admitted against the budget with one frame's charge (16 KiB), before its
    // answer's size is known: a hundred requests in one packet admit 16 streams, and answers
    // larger than a frame (as this document is) take the connection past the budget by that
    // much at most (`bff-core/src/serve/service.rs`).
    const FRAME: usize = 16 * 1024;
    let per_connection = (BUDGET / FRAME) * document.max(FRAME);
    assert!(unsent <= CONNECTIONS * per_connection, "{unsent} unsent bytes held for {CONNECTIONS} connections");
    assert!(unsent >= answered * document / 2, "{unsent} bytes for {answered} answers of {document}");
    assert!(refused >= CONNECTIONS * 50, "{refused} of {} streams refused", CONNECTIONS * 100);
    assert_eq!(metric(&metrics, "bff_h2_streams_refused_total"), Some(refused as f64));
    // Gone: what they held is let go.
    drop(floods);
    let released = common::eventually(Duration::from_secs(10), || async {
        metric(&stack.admin_text("/metrics").await, "bff_connection_unsent_bytes") == Some(0.0)
    })
    .await;
    assert!(released, "unsent bytes still counted after the connections closed");
    // And a well-behaved client is served as ever.
    let response = stack.http.get(stack.bff.url("/v2/openapi.json")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap().len(), document);
}

#[tokio::test]
async fn thousands_of_idle_and_half_open_connections_do_not_stop_a_normal_request() {
    let stack = mobile().start().await;
    let mut held = Vec::new();
    for i in 0..2_000 {
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET /mobile/home HTTP/1.1\r\nHost: bff\r\nAuthoriz").await.unwrap();
        }
        held.push(stream);
    }
    let start = Instant::now();
    let response = timeout(Duration::from_secs(10), stack.get("/mobile/home")).await.expect("answered within 10 s");
    assert_eq!(response.status(), 200, "after {:?}", start.elapsed());
    // One address holds at most its share (a tenth of the cap): past it, its idle connections
    // made room for its new ones.
    let held_to_its_share = common::eventually(Duration::from_secs(10), || async {
        let metrics = stack.admin_text("/metrics").await;
        let open = metric(&metrics, "bff_connections_open").unwrap_or(f64::MAX);
        let evicted = metric(&metrics, r#"bff_connections_closed_total{reason="evicted"}"#).unwrap_or(0.0);
        // Its share, and the test client's own connections.
        open <= 1_010.0 && evicted >= 990.0
    })
    .await;
    assert!(held_to_its_share, "{}", stack.admin_text("/metrics").await);
    drop(held);
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let stack = mobile().start().await;
    let big = "x".repeat(20_000);
    let response = stack.http.get(stack.bff.url("/healthz")).header("x-big", big).send().await.unwrap();
    assert_eq!(response.status(), 431);
    let mut request = stack.http.get(stack.bff.url("/healthz"));
    for i in 0..120 {
        request = request.header(format!("x-h{i}"), "1");
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    assert_eq!(stack.http.get(stack.bff.url("/healthz")).send().await.unwrap().status(), 200);
}

/// The answers to `HEAD` over HTTP/2: a head with the length a `GET`'s body has, then the end of
/// the stream, for a route's answer and for a refusal before any route alike (a body there is a
/// protocol error, and the client resets the stream).
#[tokio::test]
async fn a_head_over_http2_is_answered_without_a_body_whatever_answers_it() {
    use http_body_util::BodyExt as _;
    let stack = mobile().start().await;
    let addr = stack.bff.url("").trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let stream = TcpStream::connect::<std::net::SocketAddr>(addr).await.unwrap();
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let token = format!("Bearer {}", stack.token());
    for (path, credential, status) in
        [("/mobile/home", true, 200), ("/mobile/home", false, 401), ("/nowhere", false, 404), ("/healthz", false, 200)]
    {
        let request = |method: &str| {
            let request = http::Request::builder().method(method).uri(stack.bff.url(path));
            let request = if credential { request.header("authorization", &token) } else { request };
            request.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()
        };
        let get = send.send_request(request("GET")).await.unwrap();
        assert_eq!(get.status(), status, "GET {path}");
        let length = get.into_body().collect().await.unwrap().to_bytes().len();
        let head = send.send_request(request("HEAD")).await.unwrap();
        assert_eq!(head.status(), status, "HEAD {path}");
        assert_eq!(head.headers()["content-length"], length.to_string().as_str(), "HEAD {path}");
        let body = head.into_body().collect().await.unwrap_or_else(|e| panic!("HEAD {path}: {e:?}"));
        assert!(body.to_bytes().is_empty(), "HEAD {path}");
    }
}

#[tokio::test]
async fn on_sigterm_readiness_fails_first_then_in_flight_requests_finish() {
    let stack = mobile().set("server.drain_delay", "2s").start().await;
    let gateway = stack.gateway.clone();
    stack.set_faults(Service::Users, latency(600)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<Signal>();
    let router = bff_mobile::app(&gateway).unwrap();
    let server = tokio::spawn(async move {
        let shutdown = async move { rx.await.unwrap_or(Signal::Terminate) };
        gateway.serve(listener, Some(admin), router, shutdown).await
    });
    let ready = |http: reqwest::Client| async move {
        http.get(format!("http://{admin_addr}/readyz")).send().await.map(|r| r.status().as_u16())
    };
    assert_eq!(ready(stack.http.clone()).await.unwrap(), 200);
    // A slow request in flight, then SIGTERM.
    let slow = {
        let request = stack.http.get(format!("http://{addr}/mobile/home")).bearer_auth(stack.token());
        tokio::spawn(request.send())
    };
    // In flight: the slow users call has reached the mock.
    assert!(common::eventually(Duration::from_secs(10), || async { stack.stats(Service::Users).in_flight == 1 }).await);
    tx.send(Signal::Terminate).unwrap();
    // Readiness fails at once while requests are still served, for the drain delay.
    assert!(
        common::eventually(Duration::from_secs(2), || async { ready(stack.http.clone()).await.ok() == Some(503) })
            .await
    );
    let during = stack.http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(during.status(), 200);
    // The request in flight finishes with its answer, and the server stops after the delay.
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    timeout(Duration::from_secs(30), server).await.expect("stopped after the drain").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

/// An HPACK bomb: one 4 KB header put in the connection's header table, then named 4,000 times
/// by its one-byte index, 8 KB on the wire for 16 MB of headers. The decoded list is held to
/// `server.max_header_bytes` as it grows: the connection is closed, and nothing is built.
#[tokio::test]
async fn an_hpack_bomb_is_refused_as_it_decodes() {
    let stack = mobile().start().await;
    let mut block = bff_core::testing::header_block("/healthz", &[]);
    // A literal with incremental indexing and a new name (RFC 7541 §6.2.1): `x-a`, 4,000 bytes of
    // value (a 7-bit prefix of 127, then 3,873 in 7-bit groups), then index 62, the entry it made.
    block.extend_from_slice(&[0x40, 3]);
    block.extend_from_slice(b"x-a");
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
    block.extend_from_slice(&[b'a'; 4_000]);
    block.extend(std::iter::repeat_n(0x80 | 62, 4_000));
    let bomb = frame::encode(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1, &block);
    let (goaway, _) = sent_away(&stack, &bomb).await;
    assert_eq!(goaway, Some(frame::ENHANCE_YOUR_CALM));
    still_serves(&stack).await;
}

/// A CONTINUATION flood (CVE-2024-27316's kind): a header block that never ends, sent as small
/// frames of small headers, each under every size check on its own. The count of frames is held
/// to what `server.max_header_bytes` needs, and the connection is closed long before 2 MB.
#[tokio::test]
async fn a_header_block_that_never_ends_is_cut_off() {
    let stack = mobile().start().await;
    let start = bff_core::testing::header_block("/healthz", &[]);
    let mut bytes = frame::encode(frame::HEADERS, frame::END_STREAM, 1, &start);
    // One literal header of 100 bytes a frame (the block's own encoding of `x-n`, pseudo-headers
    // left off).
    let piece = bff_core::testing::header_block("/", &[("x-n", &"a".repeat(100))]);
    let piece = &piece[piece.len() - 106..];
    for _ in 0..20_000 {
        bytes.extend(frame::encode(frame::CONTINUATION, 0, 1, piece));
    }
    let (goaway, _) = sent_away(&stack, &bytes).await;
    assert_eq!(goaway, Some(frame::ENHANCE_YOUR_CALM));
    still_serves(&stack).await;
}

/// A chunked body's two unbounded corners: chunk extensions (`1;<1,000 bytes>` before every byte
/// of data) and trailers (20,000 fields after the last chunk). Neither is kept: past 16 KiB of
/// either, the body cannot be read, and the request is a `400 INVALID_BODY`.
#[tokio::test]
async fn endless_chunk_extensions_or_trailers_are_refused() {
    let stack = mobile().start().await;
    let token = stack.token();
    let mut extensions = Vec::new();
    for _ in 0..2_000 {
        extensions.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(1_000)).as_bytes());
    }
    extensions.extend_from_slice(b"0\r\n\r\n");
    let mut trailers = b"1\r\nx\r\n0\r\n".to_vec();
    for i in 0..20_000 {
        trailers.extend_from_slice(format!("x-t{i}: {}\r\n", "v".repeat(100)).as_bytes());
    }
    trailers.extend_from_slice(b"\r\n");
    for (what, body) in [("extensions", extensions), ("trailers", trailers)] {
        let mut stream = TcpStream::connect(stack.bff.addr).await.unwrap();
        let head = format!(
            "POST /mobile/orders HTTP/1.1\r\nhost: bff\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer and close before it has read it all.
        let _ = stream.write_all(&body).await;
        let mut answer = Vec::new();
        let _ = timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer}");
        assert!(answer.contains(r#""code":"INVALID_BODY""#), "{what}: {answer}");
    }
}
