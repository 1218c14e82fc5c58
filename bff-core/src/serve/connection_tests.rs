//! One connection's timers and memory bound, on tokio's paused clock, over an in-memory pipe,
//! with HTTP/2 frames written by hand.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::*;
use crate::config::ServerConfig;
use crate::observe::metrics::Metrics;
use crate::serve::service::{ConnService, MAX_FRAME, Shared};
use crate::testing::{RawH2, frame, header_block};

const FIRST_REQUEST: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(60);
/// A body of more than one frame.
const BIG: usize = 17_000;

fn router() -> Router {
    Router::new().route("/small", get(|| async { "ok" })).route("/big", get(|| async { Bytes::from(vec![b'x'; BIG]) }))
}

/// One connection served on an in-memory pipe.
struct Served {
    /// The client's end: dropping it closes the connection from the client's side.
    client: Option<DuplexStream>,
    accepted: Instant,
    state: Arc<ConnState>,
    phase: watch::Sender<Phase>,
    task: JoinHandle<(Option<Closed>, Instant)>,
}

impl Served {
    fn start(max_unsent: usize) -> Self {
        let (client, server) = tokio::io::duplex(1 << 20);
        let accepted = Instant::now();
        let state = Arc::new(ConnState::new(1, "127.0.0.1".parse().unwrap(), accepted));
        let metrics = Metrics::new();
        let shared = Arc::new(Shared {
            max_unsent,
            unsent: metrics.gauge("bff_connection_unsent_bytes", &[]),
            refused_streams: metrics.counter("bff_h2_streams_refused_total", &[]),
        });
        let service = ConnService::new(router().into(), "127.0.0.1:9".parse().unwrap(), state.clone(), shared);
        let builder = super::super::builder(&ServerConfig::default());
        let (phase, mut watching) = watch::channel(Phase::Serving);
        let timers = Timers { first_request: FIRST_REQUEST, idle: IDLE };
        let serving = state.clone();
        let task = tokio::spawn(async move {
            let closed = serve(&builder, server, service, &serving, timers, accepted, &mut watching).await;
            (closed, Instant::now())
        });
        Self { client: Some(client), accepted, state, phase, task }
    }

    fn client(&mut self) -> DuplexStream {
        self.client.take().expect("the client end, once")
    }

    /// Why and when the server closed the connection.
    async fn closed(self) -> (Option<Closed>, Instant) {
        self.task.await.expect("the connection task")
    }
}

/// Reads an HTTP/1.1 response to its end (a body of `ok`).
async fn read_small_response(client: &mut DuplexStream) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

/// Reads frames until stream `stream` ends (its END_STREAM); returns the frames read.
async fn until_stream_ends<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    h2: &mut RawH2<IO>,
    stream: u32,
) -> Vec<crate::testing::RawFrame> {
    let mut frames = Vec::new();
    loop {
        let frame = h2.next().await.unwrap().expect("the connection closed before the stream ended");
        let ends = frame.stream == stream
            && frame.flags & frame::END_STREAM != 0
            && matches!(frame.kind, frame::DATA | frame::HEADERS);
        frames.push(frame);
        if ends {
            return frames;
        }
    }
}

/// Sends a PING every 20 s and answers nothing else until the server closes the connection;
/// when it did.
async fn ping_until_closed<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(h2: &mut RawH2<IO>) -> Instant {
    let mut pings = 0u64;
    loop {
        match timeout(Duration::from_secs(20), h2.next()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return Instant::now(),
            Err(_) => {
                pings += 1;
                if h2.ping(pings.to_be_bytes()).await.is_err() {
                    return Instant::now();
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let mut served = Served::start(1 << 20);
    let _client = served.client();
    let accepted = served.accepted;
    let (closed, at) = served.closed().await;
    assert_eq!(closed, Some(Closed::NoRequest));
    assert_eq!(at - accepted, FIRST_REQUEST, "not the idle timeout");
}

#[tokio::test(start_paused = true)]
async fn an_http2_preface_alone_or_an_unfinished_header_block_is_closed_at_the_header_timeout() {
    for unfinished in [false, true] {
        let mut served = Served::start(1 << 20);
        let mut h2 = RawH2::handshake(served.client(), &[]).await.unwrap();
        if unfinished {
            // HEADERS without END_HEADERS, and no CONTINUATION ever.
            h2.send(frame::HEADERS, frame::END_STREAM, 1, &header_block("/small", &[])).await.unwrap();
        }
        let accepted = served.accepted;
        let (closed, at) = served.closed().await;
        assert_eq!(closed, Some(Closed::NoRequest), "unfinished: {unfinished}");
        assert_eq!(at - accepted, FIRST_REQUEST, "unfinished: {unfinished}");
        assert!(h2.until_closed().await.unwrap().iter().all(|f| f.kind != frame::HEADERS));
    }
}

#[tokio::test(start_paused = true)]
async fn pings_do_not_keep_an_http2_connection_without_requests_open() {
    let mut served = Served::start(1 << 20);
    let mut h2 = RawH2::handshake(served.client(), &[]).await.unwrap();
    h2.get(1, "/small", &[]).await.unwrap();
    until_stream_ends(&mut h2, 1).await;
    let answered = Instant::now();
    let gone = ping_until_closed(&mut h2).await;
    let (closed, at) = served.closed().await;
    assert_eq!(closed, Some(Closed::Idle));
    // Closed gracefully: a GOAWAY, then the close once its PING goes unanswered.
    let held = at - answered;
    assert!(
        held >= IDLE && held <= IDLE + CLOSE_GRACE,
        "the idle timeout counts from the last response, pings or not: {held:?}"
    );
    assert_eq!(gone, at);
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_closed_for_idleness_says_goodbye() {
    let mut served = Served::start(1 << 20);
    let mut h2 = RawH2::handshake(served.client(), &[]).await.unwrap();
    h2.get(1, "/small", &[]).await.unwrap();
    until_stream_ends(&mut h2, 1).await;
    // The client acknowledges the server's PINGs, as a client does during a graceful close.
    let mut frames = Vec::new();
    while let Some(frame) = h2.next().await.unwrap() {
        if frame.kind == frame::PING && frame.flags & frame::ACK == 0 {
            h2.send(frame::PING, frame::ACK, 0, &frame.payload).await.unwrap();
        }
        frames.push(frame);
    }
    assert!(frames.iter().any(|f| f.kind == frame::GOAWAY), "{frames:?}");
    assert_eq!(served.closed().await.0, Some(Closed::Idle));
}

/// HTTP/1.1 waits for its next request head `header_read_timeout` (hyper's head timer starts
/// when it starts reading one), shorter than the idle timeout.
#[tokio::test(start_paused = true)]
async fn an_http1_keep_alive_connection_waits_the_header_timeout_for_its_next_request() {
    let mut served = Served::start(1 << 20);
    let mut client = served.client();
    for _ in 0..3 {
        client.write_all(b"GET /small HTTP/1.1\r\nHost: bff\r\n\r\n").await.unwrap();
        read_small_response(&mut client).await;
        tokio::time::sleep(FIRST_REQUEST - Duration::from_secs(1)).await;
    }
    let answered = Instant::now() - (FIRST_REQUEST - Duration::from_secs(1));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(Instant::now() - answered, FIRST_REQUEST);
    served.closed().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_reads_no_answer_is_closed_however_often_it_pings() {
    let mut served = Served::start(1 << 20);
    let mut h2 = RawH2::handshake(served.client(), &[(frame::INITIAL_WINDOW_SIZE, 0)]).await.unwrap();
    h2.get(1, "/big", &[]).await.unwrap();
    // The head comes; the body waits for a window that never opens.
    loop {
        let frame = h2.next().await.unwrap().expect("open");
        assert_ne!(frame.kind, frame::DATA, "data sent into a zero window");
        if frame.kind == frame::HEADERS && frame.stream == 1 {
            break;
        }
    }
    let answered = Instant::now();
    let gone = ping_until_closed(&mut h2).await;
    let (closed, at) = served.closed().await;
    assert_eq!(closed, Some(Closed::Stalled));
    let held = at - answered;
    assert!(held >= IDLE && held <= 2 * IDLE, "held {held:?}");
    assert_eq!(gone, at);
}

#[tokio::test(start_paused = true)]
async fn streams_over_the_unsent_budget_are_refused_until_the_client_reads() {
    // Room for two answers in the making, not three.
    let budget = 2 * MAX_FRAME + 1_000;
    let mut served = Served::start(budget);
    let mut h2 = RawH2::handshake(served.client(), &[(frame::INITIAL_WINDOW_SIZE, 0)]).await.unwrap();
    // Ten requests in one go, none of whose answers it reads.
    for stream in (1..20).step_by(2) {
        h2.get(stream, "/big", &[]).await.unwrap();
    }
    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    while answered.len() + refused.len() < 10 {
        let frame = h2.next().await.unwrap().expect("open");
        match frame.kind {
            frame::HEADERS => answered.push(frame.stream),
            frame::RST_STREAM => {
                assert_eq!(frame.error_code(), Some(frame::REFUSED_STREAM));
                refused.push(frame.stream);
            }
            _ => {}
        }
    }
    assert_eq!(answered, [1, 3]);
    assert_eq!(refused, [5, 7, 9, 11, 13, 15, 17, 19]);
    // What it holds is the two answers it did not read (and their streams), and no more.
    tokio::task::yield_now().await;
    assert_eq!(served.state.unsent(), 2 * (MAX_FRAME + BIG));
    // It reads them: the bytes are taken, and it may ask again.
    h2.window_update(0, 1 << 20).await.unwrap();
    h2.window_update(1, 1 << 20).await.unwrap();
    h2.window_update(3, 1 << 20).await.unwrap();
    let mut data = 0;
    let mut ended = 0;
    while ended < 2 {
        let frame = h2.next().await.unwrap().expect("open");
        if frame.kind == frame::DATA {
            data += frame.payload.len();
            ended += usize::from(frame.flags & frame::END_STREAM != 0);
        }
    }
    assert_eq!(data, 2 * BIG);
    assert_eq!(served.state.unsent(), 0);
    h2.send(frame::SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]).await.unwrap();
    h2.get(21, "/small", &[]).await.unwrap();
    let frames = until_stream_ends(&mut h2, 21).await;
    assert!(frames.iter().any(|f| f.kind == frame::HEADERS && f.stream == 21), "{frames:?}");
}

#[tokio::test(start_paused = true)]
async fn an_evicted_connection_is_closed_gracefully_and_at_once() {
    let mut served = Served::start(1 << 20);
    let mut client = served.client();
    client.write_all(b"GET /small HTTP/1.1\r\nHost: bff\r\n\r\n").await.unwrap();
    read_small_response(&mut client).await;
    let evicted = Instant::now();
    served.state.evict();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    let (closed, at) = served.closed().await;
    assert_eq!(closed, Some(Closed::Evicted));
    assert_eq!(at, evicted, "no timer waited for");
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_a_request_in_flight_finishes_and_the_rest_are_dropped_at_the_end_of_the_grace() {
    let mut served = Served::start(1 << 20);
    let mut h2 = RawH2::handshake(served.client(), &[(frame::INITIAL_WINDOW_SIZE, 0)]).await.unwrap();
    h2.get(1, "/big", &[]).await.unwrap();
    loop {
        if h2.next().await.unwrap().expect("open").kind == frame::HEADERS {
            break;
        }
    }
    served.phase.send(Phase::Draining).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!served.task.is_finished(), "dropped while draining, before the grace was over");
    served.phase.send(Phase::Closing).unwrap();
    let (closed, _) = served.closed().await;
    assert_eq!(closed, Some(Closed::Shutdown));
}
