//! Streaming endpoints, for passthrough routes: on catalog `GET /files/{bytes}` (exactly that
//! many bytes in 64 KiB chunks, `?chunk_delay_ms=N` between them) and `PUT /uploads` (reads a
//! body of any size, answers `{"bytes": N, "sha256": "…", "trailers": {"name": "value"}}`, the
//! trailer fields it received with their names lower-case); on notifications `GET /events`
//! (server-sent events for the user in `X-User-Id`: `?count=N&interval_ms=M`, one `data:` line
//! each) and `GET /ws` (a WebSocket echoing every message).
//!
//! The file's bytes are a pattern (`i % 251` for byte `i`) a test can check without storing it.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A file's chunk size.
pub const CHUNK: usize = 64 * 1024;
/// The largest file served: 4 GiB.
const MAX_FILE: u64 = 4 << 30;
/// The longest pause asked for between chunks or events.
const MAX_DELAY_MS: u64 = 10_000;
/// The most events one stream sends.
const MAX_EVENTS: u64 = 10_000;

/// Byte `i` of every file.
pub fn file_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// One chunk's worth of the pattern and 251 bytes more, made once: a chunk starting at any
/// offset (modulo 251) is a slice of it.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| (0..(CHUNK as u64 + 251)).map(file_byte).collect::<Vec<u8>>().into())
}

#[derive(Deserialize)]
pub(crate) struct FileQuery {
    chunk_delay_ms: Option<u64>,
    /// Chunked, with a trailer `x-file-bytes: N` after the last byte (for a client that sent
    /// `TE: trailers`), instead of a `Content-Length`.
    #[serde(default)]
    trailers: bool,
    /// `name=value` pairs, `,` between them: each is answered as a `Set-Cookie` line (for tests
    /// of what a gateway lets an upstream set).
    cookies: Option<String>,
}

pub(crate) async fn file_get(Path(raw): Path<String>, query: Result<Query<FileQuery>, QueryRejection>) -> Response {
    let Ok(Query(query)) = query else {
        return super::error(StatusCode::BAD_REQUEST, "chunk_delay_ms is a number of milliseconds");
    };
    let Some(size) = raw.parse::<u64>().ok().filter(|n| *n <= MAX_FILE) else {
        return super::error(StatusCode::BAD_REQUEST, format!("a file is 0 to {MAX_FILE} bytes, not `{raw}`"));
    };
    let delay = Duration::from_millis(query.chunk_delay_ms.unwrap_or(0).min(MAX_DELAY_MS));
    let pattern = pattern().clone();
    let chunks = futures::stream::unfold(0_u64, move |sent| {
        let pattern = pattern.clone();
        async move {
            if sent >= size {
                return None;
            }
            if sent > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let len = (size - sent).min(CHUNK as u64) as usize;
            let start = (sent % 251) as usize;
            Some((Ok::<_, std::io::Error>(pattern.slice(start..start + len)), sent + len as u64))
        }
    });
    let octets = [(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))];
    if query.trailers {
        let mut trailer = HeaderMap::new();
        trailer.insert("x-file-bytes", HeaderValue::from(size));
        let frames = chunks
            .map(|chunk| chunk.map(Frame::data))
            .chain(futures::stream::once(async move { Ok::<_, std::io::Error>(Frame::trailers(trailer)) }));
        let declared = [(header::TRAILER, HeaderValue::from_static("x-file-bytes"))];
        return (octets, declared, Body::new(StreamBody::new(frames))).into_response();
    }
    let mut response =
        (octets, [(header::CONTENT_LENGTH, HeaderValue::from(size))], Body::from_stream(chunks)).into_response();
    for cookie in query.cookies.iter().flat_map(|c| c.split(',')) {
        if let Ok(line) = HeaderValue::from_str(&format!("{cookie}; Path=/")) {
            response.headers_mut().append(header::SET_COOKIE, line);
        }
    }
    response
}

pub(crate) async fn upload_put(mut body: Body) -> Response {
    use http_body_util::BodyExt as _;
    let (mut bytes, mut hash, mut trailers) = (0_u64, Sha256::new(), serde_json::Map::new());
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return super::error(StatusCode::BAD_REQUEST, format!("the body broke off: {e}")),
        };
        match frame.into_data() {
            Ok(chunk) => {
                bytes += chunk.len() as u64;
                hash.update(&chunk);
            }
            Err(frame) => {
                for (name, value) in frame.into_trailers().into_iter().flatten().filter_map(|(n, v)| Some((n?, v))) {
                    trailers.insert(name.to_string(), String::from_utf8_lossy(value.as_bytes()).into());
                }
            }
        }
    }
    let sha256: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    axum::Json(json!({ "bytes": bytes, "sha256": sha256, "trailers": trailers })).into_response()
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    count: Option<u64>,
    interval_ms: Option<u64>,
}

pub(crate) async fn events_get(headers: HeaderMap, query: Result<Query<EventsQuery>, QueryRejection>) -> Response {
    let Ok(Query(query)) = query else {
        return super::error(StatusCode::BAD_REQUEST, "count and interval_ms are numbers");
    };
    let Some(user) = headers.get("x-user-id").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return super::error(StatusCode::UNAUTHORIZED, "events are a user's: X-User-Id is missing");
    };
    let count = query.count.unwrap_or(10).min(MAX_EVENTS);
    let interval = Duration::from_millis(query.interval_ms.unwrap_or(100).min(MAX_DELAY_MS));
    let events = futures::stream::unfold(0_u64, move |seq| {
        let user = user.clone();
        async move {
            if seq >= count {
                return None;
            }
            if seq > 0 {
                tokio::time::sleep(interval).await;
            }
            let event = format!("id: {seq}\ndata: {}\n\n", json!({ "user": user, "seq": seq }));
            Some((Ok::<_, std::io::Error>(Bytes::from(event)), seq + 1))
        }
    });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, Body::from_stream(events)).into_response()
}

/// `GET /ws`: a WebSocket that echoes every text and binary message, for the user in `X-User-Id`
/// (its first message says who that is).
pub(crate) async fn ws_get(headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let user = headers.get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    upgrade.on_upgrade(move |mut socket| async move {
        let hello = json!({ "user": user }).to_string();
        if socket.send(Message::Text(hello.into())).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            match message {
                Message::Text(_) | Message::Binary(_) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    })
}
