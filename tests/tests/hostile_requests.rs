//! Requests a hostile client would send, generated from what attackers try: dot segments and
//! broken escapes, bytes that are not text in every header the gateway reads, forged and broken
//! credentials, cookies and forwarding headers, deep and broken JSON bodies. Each shipped BFF,
//! with healthy upstreams, must give every one a whole answer in time and never a server error;
//! every refusal of its own is a problem document naming its status and request id; the request
//! behind it on the connection gets its own answer; no page of an unlisted origin may read an
//! answer; an upstream gets an identity header only as the credential verifies it, and never the
//! browser session's cookies; and the BFF still serves afterwards.
//!
//! The requests go over plain TCP as written (a client library would tidy them first), one
//! connection each; then the same kind over HTTP/2 (h2c), where a client sends what HTTP/1.1
//! cannot carry the same way (its own `:authority`, cookies split into fields). `PROPTEST_CASES`
//! sets how many per BFF and protocol.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Stack, StackBuilder};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// How long an answer may take to start, or a pause in it may last.
const PATIENCE: Duration = Duration::from_secs(30);

/// A request as a client writes it.
#[derive(Debug, Clone)]
struct Hostile {
    method: &'static str,
    target: String,
    /// Whether the BFF's valid credential is sent (besides whatever `headers` hold).
    credential: bool,
    /// Whether a body goes with `Content-Type: application/json` (besides `headers`).
    json: bool,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

impl Hostile {
    /// The request in HTTP/1.1; with `close`, the last on its connection.
    fn bytes(&self, credential: &[(&'static str, String)], close: bool) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nhost: localhost\r\n", self.method, self.target);
        if close {
            out.push_str("connection: close\r\n");
        }
        for (name, value) in credential.iter().filter(|_| self.credential) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method, "POST" | "PUT" | "PATCH") {
            out.push_str(&format!("content-length: {}\r\n", self.body.len()));
            if self.json {
                out.push_str("content-type: application/json\r\n");
            }
        }
        let mut out = out.into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// One BFF under attack.
struct Target {
    stack: Stack,
    /// Paths of its routes, `{}` for a path parameter.
    paths: &'static [&'static str],
    /// Query parameters its routes take, with values they accept.
    queries: &'static [&'static str],
    /// Its valid credential, as headers.
    credential: Vec<(&'static str, String)>,
    /// A request it answers `200` with the credential.
    plain: &'static str,
    /// The identity headers an upstream may get, as its credential verifies (`*`: any value).
    identity: &'static [(&'static str, &'static str)],
    /// Its `cors.allow_origins`.
    origins: &'static [&'static str],
    /// Prefixes of its passthrough routes, whose answers are the upstream's own.
    passthrough: &'static [&'static str],
}

fn segment() -> impl Strategy<Value = String> {
    let fixed: Vec<&'static str> = vec![
        ".",
        "..",
        "%2e%2e",
        "%2E.",
        ".%2e",
        "..;x",
        ".;",
        "%2e%2e%3b",
        "%2f",
        "%2F..",
        "%5c",
        "..%5c..",
        "%00",
        "%",
        "%z",
        "%2",
        "%2%65",
        "%25",
        "%252e%252e",
        "%C3%A9",
        "%ff",
        "42",
        "43",
        "0",
        "-1",
        "SKU-1",
        "sku-9",
        "99999999999999999999",
        "1e3",
        "%20",
        "+",
        "a;b=c",
        "~",
        "_faults",
        "..%2f..%2f_faults",
        "openapi.json",
        "%3f",
        "%23",
        "\u{e9}",
        "\u{1F600}",
        "",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,12}",
        1 => (1usize..3000).prop_map(|n| "a".repeat(n)),
    ]
}

/// An id a route's upstream knows, for a `{}` of a path.
fn known_id() -> impl Strategy<Value = String> {
    proptest::sample::select(vec!["42", "4205", "4301", "SKU-0001", "SKU-0007", "1"]).prop_map(str::to_owned)
}

fn query(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    let keys = proptest::sample::select(vec![
        "fields",
        "cursor",
        "limit",
        "returnUrl",
        "login_hint",
        "user",
        "page",
        "",
        "%",
        "a[b]",
        "fields[]",
        "q",
    ]);
    let values = prop_oneof![
        3 => proptest::sample::select(vec![
            "", "%", "%zz", "name", "name,badge", "recentOrders.id", "a.b.c.d.e.f.g.h", "a,,b", ",", "*", "-1", "0",
            "99999999999999999999", "1e308", "NaN", "null", "%F0%9F%98%80", "%ff", "//evil.example", "/\\evil.example",
            "https://evil.example", "%2F%2Fevil.example", "/ok", "eyJvZmZzZXQiOjF9", "!!!!", "%00", "a%0d%0ab",
        ])
        .prop_map(str::to_owned),
        1 => (1usize..2000).prop_map(|n| ",".repeat(n)),
        1 => (1usize..200).prop_map(|n| "a.".repeat(n)),
    ];
    let pair = prop_oneof![
        (keys, values).prop_map(|(k, v)| format!("{k}={v}")),
        proptest::sample::select(known).prop_map(str::to_owned),
    ];
    proptest::collection::vec(pair, 0..4)
        .prop_map(|pairs| if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) })
}

/// A header a gateway reads, with what an attacker puts in it. Values may hold any byte a
/// server may be sent but CR, LF and NUL.
fn header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    fn one(name: &'static str, values: Vec<&'static [u8]>) -> BoxedStrategy<(&'static str, Vec<u8>)> {
        proptest::sample::select(values).prop_map(move |v| (name, v.to_vec())).boxed()
    }
    let long = (1usize..2000, proptest::sample::select(vec![b'a', b',', b';', b'=', b' ', b'.', 0xff]))
        .prop_map(|(n, byte)| vec![byte; n]);
    let name = proptest::sample::select(vec![
        "authorization",
        "cookie",
        "x-forwarded-for",
        "forwarded",
        "traceparent",
        "tracestate",
        "accept-encoding",
        "if-none-match",
        "origin",
        "x-request-id",
        "idempotency-key",
        "content-type",
        "x-api-key",
        "x-csrf",
        "x-user-id",
        "connection",
        "accept",
        "range",
        "x-forwarded-host",
        "x-forwarded-proto",
        "via",
        "te",
    ]);
    prop_oneof![
        one(
            "authorization",
            vec![
                b"Bearer",
                b"Bearer ",
                b"bearer x.y.z",
                b"Basic Zm9vOmJhcg==",
                b"Bearer \xff\xfe",
                b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.",
                b"Bearer a.b",
                b"Bearer ....",
                b"Bearer  \t x"
            ]
        ),
        one(
            "cookie",
            vec![
                b"__Host-bff-session=x",
                b"__Host-bff-session=",
                b"a=b; __Host-bff-session=\xff",
                b"lang=fran\xc3\xa7ais; __Host-bff-login=1",
                b";;;;=;=",
                b"__Host-bff-session=a; __Host-bff-session=b"
            ]
        ),
        one(
            "x-forwarded-for",
            vec![
                b"1.1.1.1",
                b"garbage",
                b"1.1.1.1, 2.2.2.2\xff",
                b"::1",
                b"[::1]:80",
                b",,,",
                b"300.1.1.1",
                b"unknown, 10.0.0.1"
            ]
        ),
        one(
            "forwarded",
            vec![b"for=1.1.1.1", b"for=\"[::1]\";proto=javascript", b";;;;", b"for=\"", b"by=a;for=b,for=c"]
        ),
        one(
            "traceparent",
            vec![
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                b"ff-00-00-00",
                b"garbage",
                b"00-00000000000000000000000000000000-0000000000000000-01",
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff-x",
                b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                b"00-\xff\xff-x-01"
            ]
        ),
        one(
            "accept-encoding",
            vec![
                b"gzip;q=0",
                b"br;q=nan",
                b"*;q=1.5",
                b"gzip, gzip, gzip",
                b"identity;q=0, *;q=0",
                b"\xff",
                b"br;q=-1"
            ]
        ),
        one("if-none-match", vec![b"*", b"W/\"x\"", b"\"", b"W/", b"\"a\", \"b\", *", b"\xff"]),
        one(
            "origin",
            vec![
                b"null",
                b"https://evil.example",
                b"http://localhost",
                b"\xff",
                b"http://localhost:99999",
                b"http://localhost:3000",
                b"http://localhost:3000.evil.example",
                b"HTTP://LOCALHOST:3000",
            ]
        ),
        one("x-request-id", vec![b"", b"../../etc", b"\xc3\xbc", b"a b", b"{\"json\":1}"]),
        one(
            "content-type",
            vec![
                b"application/json",
                b"application/json; charset=utf-16",
                b"text/plain",
                b"multipart/form-data; boundary=",
                b"application/json\xff"
            ]
        ),
        one("connection", vec![b"keep-alive, x-user-id", b"x-request-id", b"upgrade", b"close, te", b"authorization"]),
        one("x-user-id", vec![b"1", b"admin", b"\xff"]),
        one("host", vec![b"", b"evil.example", b"a@b", b"[::1", b"localhost:99999", b"LOCALHOST."]),
        one("expect", vec![b"100-continue", b"200-ok"]),
        one("content-encoding", vec![b"gzip", b"identity", b"br, identity", b"", b"\xff", b"IDENTITY"]),
        one("access-control-request-method", vec![b"GET", b"PUT", b"FOO", b"get", b"\xff", b""]),
        one("access-control-request-headers", vec![b"x-csrf, content-type", b"authorization", b"\xff", b",,,", b"*"]),
        one("upgrade", vec![b"websocket", b"h2c", b"websocket, h2c", b"\xff"]),
        one("sec-websocket-version", vec![b"13", b"8", b"13, 8", b"x"]),
        one("sec-websocket-key", vec![b"dGhlIHNhbXBsZSBub25jZQ==", b"", b"short", b"\xff"]),
        one("idempotency-key", vec![b"k-1", b"k-2", b"", b"\xff", b" ", b"k\t1"]),
        one("x-api-key", vec![b"", b"demo-free-key", b"demo-pro-key\xff", b"demo-pro-key "]),
        (name, long),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            &b""[..], b"{\"user\":\"42\",\"items\":[{\"sku\":\"SKU-0003\",\"qty\":1}]}",
            b"{\"items\":[{\"sku\":\"SKU-0003\",\"qty\":1},{\"sku\":\"SKU-0003\",\"qty\":2}]}", b"{\"count\":1}",
            b"{}", b"{", b"[]", b"null", b"{\"a\":", b"\"\\ud800\"", b"1e999999", b"{\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
            b"{\"items\":[{\"sku\":\"SKU-1\",\"qty\":-1}]}", b"{\"items\":[{\"sku\":\"SKU-1\",\"qty\":1e30}]}",
            b"{\"ids\":[1,2,3]}", b"\xff\xfe", b"{\"a\":1,\"a\":2}",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => (1usize..5000).prop_map(|n| "[".repeat(n).into_bytes()),
        1 => (1usize..2000).prop_map(|n| "{\"a\":".repeat(n).into_bytes()),
    ]
}

/// A path of one of `paths`: its `{}` filled with a known id or a hostile segment, and now and
/// then hostile segments after it.
fn path(paths: &'static [&'static str]) -> impl Strategy<Value = String> {
    let slot = prop_oneof![known_id(), segment()];
    let extra = prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(segment(), 1..4)];
    (proptest::sample::select(paths.to_vec()), slot, extra).prop_map(|(template, slot, extra)| {
        let path = template.replace("{}", &slot);
        if extra.is_empty() { path } else { format!("{path}/{}", extra.join("/")) }
    })
}

fn hostile(target: &Target) -> impl Strategy<Value = Hostile> {
    let method = prop_oneof![
        8 => Just("GET"),
        2 => Just("POST"),
        1 => proptest::sample::select(vec!["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"]),
    ];
    let headers = prop_oneof![Just(Vec::new()), proptest::collection::vec(header(), 1..5)];
    let credential = proptest::bool::weighted(0.8);
    let body = (proptest::bool::weighted(0.75), body());
    (method, path(target.paths), query(target.queries), credential, headers, body).prop_map(
        |(method, path, query, credential, headers, (json, body))| {
            let body = if matches!(method, "GET" | "HEAD" | "OPTIONS") { Vec::new() } else { body };
            Hostile { method, target: format!("{path}{query}"), credential, json, headers, body }
        },
    )
}

/// An answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The request sent right behind each hostile one on its connection: its answer must be its
/// own, whatever the server made of the request before it.
const PROBE: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-request-id: probe\r\nconnection: close\r\n\r\n";

/// Sends `request` on a new connection with [`PROBE`] behind it, and reads the request's whole
/// answer (past any `100 Continue`), then the probe's unless the server closes the connection.
fn exchange(addr: SocketAddr, request: &[u8], head_only: bool) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(PATIENCE)).map_err(|e| e.to_string())?;
    // A server that answers before reading it all (a refused head) may close on the rest.
    let _ = stream.write_all(&[request, PROBE].concat());
    let mut reader = Reader { stream, buffer: Vec::new() };
    let answer = read_answer(&mut reader, head_only)?;
    if answer.status == 101 {
        // The connection is a tunnel now: the probe went into it.
        return Ok(answer);
    }
    if answer.header("connection").is_some_and(|c| c.to_ascii_lowercase().contains("close")) {
        return Ok(answer);
    }
    // A server may close a connection after any answer; if it answers more, it answers the probe.
    if reader.buffer.is_empty() && reader.fill().unwrap_or(0) == 0 {
        return Ok(answer);
    }
    let probe = read_answer(&mut reader, false).map_err(|e| format!("the request behind it: {e}"))?;
    if probe.status != 200 || probe.header("x-request-id") != Some("probe") {
        return Err(format!("the answer to the request behind it is another's: {probe:?} (after {answer:?})"));
    }
    Ok(answer)
}

/// Reads one whole answer off `reader`, past any `100 Continue`.
fn read_answer(reader: &mut Reader, head_only: bool) -> Result<Answer, String> {
    loop {
        let head = reader.until(b"\r\n\r\n")?;
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 =
            status_line.get(9..12).and_then(|s| s.parse().ok()).ok_or(format!("no status in {text:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
            .collect();
        if status == 100 {
            continue;
        }
        let mut answer = Answer { status, headers, body: Vec::new() };
        if head_only || matches!(status, 101 | 204 | 304) {
            return Ok(answer);
        }
        answer.body = if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().map_err(|_| format!("content-length {length:?}"))?;
            reader.exactly(length)?
        } else if answer.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            reader.chunked()?
        } else {
            reader.rest()?
        };
        return Ok(answer);
    }
}

struct Reader {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Reader {
    fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).map_err(|e| format!("read: {e} (after {} bytes)", self.buffer.len()))?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Up to and without `end`, taken off the buffer with it.
    fn until(&mut self, end: &[u8]) -> Result<Vec<u8>, String> {
        loop {
            if let Some(at) = self.buffer.windows(end.len()).position(|w| w == end) {
                let taken: Vec<u8> = self.buffer.drain(..at + end.len()).collect();
                return Ok(taken[..at].to_vec());
            }
            if self.fill()? == 0 {
                return Err(format!("closed before {end:?}: {:?}", String::from_utf8_lossy(&self.buffer)));
            }
        }
    }

    fn exactly(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buffer.len() < n {
            if self.fill()? == 0 {
                return Err(format!("closed after {} of {n} bytes", self.buffer.len()));
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    fn chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.until(b"\r\n")?;
            let size = String::from_utf8_lossy(&line);
            let size = size.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {size:?}"))?;
            if size == 0 {
                while !self.until(b"\r\n")?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size)?);
            self.exactly(2)?;
        }
    }

    fn rest(&mut self) -> Result<Vec<u8>, String> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buffer))
    }
}

/// The fields HTTP/2 forbids (RFC 9113 §8.2.2): a client cannot send them, so neither does this.
const NOT_IN_HTTP2: [&str; 5] = ["connection", "te", "transfer-encoding", "upgrade", "keep-alive"];

/// Sends `request` over a new HTTP/2 connection and reads the whole answer. `Ok(None)` when the
/// request cannot be written in HTTP/2 (a target that is no URI), or the server refused its
/// stream as malformed (`RST_STREAM`), which is HTTP/2's bare refusal.
async fn exchange_h2(
    addr: SocketAddr,
    request: &Hostile,
    credential: &[(&'static str, String)],
) -> Result<Option<Answer>, String> {
    use http_body_util::BodyExt as _;
    let Ok(uri) = format!("http://localhost{}", request.target).parse::<http::Uri>() else { return Ok(None) };
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else { return Ok(None) };
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in credential.iter().filter(|_| request.credential) {
        builder = builder.header(*name, value);
    }
    if request.json && !request.body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in &request.headers {
        if let (false, Ok(value)) = (NOT_IN_HTTP2.contains(name), http::HeaderValue::from_bytes(value)) {
            builder = builder.header(*name, value);
        }
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(request.body.clone()));
    let request = builder.body(body).map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let exchange = async {
        let response = match send.send_request(request).await {
            Ok(response) => response,
            Err(e) if format!("{e:?}").contains("PROTOCOL_ERROR") => return Ok(None),
            Err(e) => return Err(format!("no answer: {e:?}")),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e:?}"))?.to_bytes().to_vec();
        Ok(Some(Answer { status, headers, body }))
    };
    tokio::time::timeout(PATIENCE, exchange).await.map_err(|_| "no whole answer in time".to_owned())?
}

/// What the demo user's token verifies as, upstream.
const USER: &[(&str, &str)] = &[("x-user-id", "42"), ("x-user-scopes", "orders profile")];

/// The headers that say who a call is for, which only the gateway sets.
const IDENTITY: [&str; 3] = ["x-user-id", "x-user-scopes", "x-partner-account"];

/// What reached the upstreams for one request: an identity header only as the credential
/// verifies it (never a client's own), and never the browser session's cookies.
fn upstreams_saw(target: &Target, shown: &dyn Fn() -> String) -> Result<(), TestCaseError> {
    for (service, running) in target.stack.mocks.iter() {
        let seen = running.stats.snapshot();
        if seen.requests == 0 {
            continue;
        }
        for name in IDENTITY {
            if let Some(value) = seen.last_headers.get(name) {
                let verified = target.identity.iter().any(|(n, v)| *n == name && (v == value || *v == "*"));
                prop_assert!(verified, "{service:?} got `{name}: {value}`: {}", shown());
            }
        }
        if let Some(cookie) = seen.last_headers.get("cookie") {
            prop_assert!(!cookie.contains("__Host-bff-"), "{service:?} got the session's cookies: {}", shown());
        }
    }
    Ok(())
}

/// What every answer must be.
fn judge(target: &Target, request: &Hostile, answer: &Answer) -> Result<(), TestCaseError> {
    let shown = || {
        let body = String::from_utf8_lossy(&answer.body);
        let body: String = body.chars().take(300).collect();
        let sent: Vec<String> =
            request.headers.iter().map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v))).collect();
        format!("{} {} {sent:?} -> {} {:?} {body:?}", request.method, request.target, answer.status, answer.headers)
    };
    prop_assert!(answer.status < 500, "a server error: {}", shown());
    upstreams_saw(target, &shown)?;
    // An answer without a request id is the HTTP server's own refusal of a request it cannot
    // parse, before any route: a bare 4xx.
    let Some(request_id) = answer.header("x-request-id") else {
        prop_assert!(matches!(answer.status, 400 | 414 | 431), "no request id on {}", shown());
        return Ok(());
    };
    // Only a listed page may read an answer from another origin.
    if let Some(allowed) = answer.header("access-control-allow-origin") {
        prop_assert!(target.origins.contains(&allowed), "an answer readable by `{allowed}`: {}", shown());
    }
    let path = request.target.split('?').next().unwrap_or_default();
    let upstreams_own = target.passthrough.iter().any(|prefix| path.starts_with(prefix));
    let is_problem = answer.header("content-type") == Some("application/problem+json");
    if answer.status >= 400 && !upstreams_own && request.method != "HEAD" {
        prop_assert!(is_problem, "a refusal that is no problem document: {}", shown());
    }
    if is_problem && request.method != "HEAD" {
        let body: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| TestCaseError::fail(format!("{e}: {}", shown())))?;
        prop_assert_eq!(body["status"].as_u64(), Some(u64::from(answer.status)), "{}", shown());
        prop_assert!(body["code"].as_str().is_some_and(|c| !c.is_empty()), "no code: {}", shown());
        prop_assert_eq!(body["request_id"].as_str(), Some(request_id), "{}", shown());
        // What it echoes of the request is bounded, however long the request.
        prop_assert!(answer.body.len() <= 2048, "a problem of {} bytes: {}", answer.body.len(), shown());
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(192)
}

/// Sends generated requests at the BFF `builder` starts; `target` says how to read it.
fn attack(builder: StackBuilder, describe: fn(Stack, &tokio::runtime::Runtime) -> Target) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _entered = runtime.enter();
    let target = describe(runtime.block_on(builder.start()), &runtime);
    let addr: SocketAddr =
        target.stack.bff.url("").trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config.clone());
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let outcome = runner.run(&hostile(&target), |request| {
        target.stack.reset_stats();
        let answer = exchange(addr, &request.bytes(&target.credential, false), request.method == "HEAD")
            .map_err(|e| TestCaseError::fail(format!("{} {}: {e}", request.method, request.target)))?;
        *statuses.lock().unwrap().entry(answer.status).or_default() += 1;
        judge(&target, &request, &answer)
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    // Over HTTP/2, the same kind of requests.
    let outcome = TestRunner::new(config).run(&hostile(&target), |request| {
        target.stack.reset_stats();
        let answer = runtime
            .block_on(exchange_h2(addr, &request, &target.credential))
            .map_err(|e| TestCaseError::fail(format!("HTTP/2 {} {}: {e}", request.method, request.target)))?;
        let Some(answer) = answer else { return Ok(()) };
        *statuses.lock().unwrap().entry(answer.status).or_default() += 1;
        judge(&target, &request, &answer)
    });
    if let Err(failure) = outcome {
        panic!("over HTTP/2: {failure}");
    }
    // The requests reached the handlers, not only the refusals before them.
    let statuses = statuses.into_inner().unwrap();
    let (all, ok) = (statuses.values().sum::<u32>(), statuses.get(&200).copied().unwrap_or(0));
    assert!(ok * 20 >= all, "too few requests got through to be a test of the handlers: {statuses:?}");
    eprintln!("answers by status: {statuses:?}");
    // Still serving, to a plain request with the credential.
    let plain = Hostile {
        method: "GET",
        target: target.plain.to_owned(),
        credential: true,
        json: false,
        headers: vec![],
        body: vec![],
    };
    let answer = exchange(addr, &plain.bytes(&target.credential, true), false).unwrap();
    assert_eq!(answer.status, 200, "{:?}", String::from_utf8_lossy(&answer.body));
    runtime.block_on(async move { drop(target) });
}

#[test]
fn the_mobile_bff_answers_every_hostile_request() {
    attack(StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app), |stack, _| Target {
        credential: vec![("authorization", format!("Bearer {}", stack.token()))],
        stack,
        plain: "/mobile/home",
        identity: USER,
        paths: &["/mobile/home", "/mobile/orders", "/mobile/orders/{}", "/mobile/products/{}", "/mobile/feed", "/{}"],
        queries: &["fields=name,badge", "fields=recentOrders.id", "cursor=", "limit=2"],
        origins: &[],
        passthrough: &[],
    });
}

/// The web BFF's routes, what they take, and the pages that may call it.
const WEB_PATHS: &[&str] = &[
    "/web/home",
    "/web/products/{}",
    "/web/notifications/read",
    "/api/catalog/products/{}",
    "/api/uploads",
    "/api/notifications/{}",
    "/api/notifications/ws",
    "/bff/login",
    "/bff/callback",
    "/bff/user",
    "/bff/logout",
    "/app.js",
    "/{}",
];
const WEB_QUERIES: &[&str] = &["fields=profile", "returnUrl=/web/home", "code=x&state=y", "login_hint=someone"];
const WEB_ORIGINS: &[&str] = &["http://localhost:3000", "http://127.0.0.1:3000"];

#[test]
fn the_web_bff_answers_every_hostile_request() {
    attack(StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app), |stack, _| Target {
        credential: vec![("authorization", format!("Bearer {}", stack.token()))],
        stack,
        plain: "/web/home",
        identity: USER,
        paths: WEB_PATHS,
        queries: WEB_QUERIES,
        origins: WEB_ORIGINS,
        passthrough: &["/api/catalog/", "/api/uploads", "/api/notifications/"],
    });
}

#[test]
fn the_partner_bff_answers_every_hostile_request() {
    attack(StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app), |stack, _| Target {
        credential: vec![("x-api-key", bff_demo::PARTNER_PRO_KEY.to_owned())],
        stack,
        plain: "/v2/products/SKU-1",
        identity: &[("x-partner-account", "demo"), ("x-user-scopes", "orders")],
        paths: &[
            "/v2/orders",
            "/v1/orders",
            "/v2/orders/{}",
            "/v1/orders/{}",
            "/v1/products/{}",
            "/v2/products/{}",
            "/v1/openapi.json",
            "/v2/openapi.json",
            "/{}",
        ],
        queries: &["user=42", "page=2", "limit=2", "cursor=eyJvZmZzZXQiOjJ9", "fields=id"],
        origins: &[],
        passthrough: &[],
    });
}

/// The web BFF with a browser session: its cookie and `X-CSRF` as the page sends them, through
/// the session's own checks (cookie parsing, CSRF, `Origin`) and its token on the passthrough
/// routes.
#[test]
fn the_web_bff_answers_every_hostile_request_in_a_browser_session() {
    attack(StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app), |stack, runtime| {
        let base = stack.bff.url("").trim_end_matches('/').to_owned();
        let session = runtime.block_on(common::browser::sign_in(&common::browser::browser(), &base, 42));
        Target {
            credential: vec![("cookie", format!("{}={session}", common::browser::SESSION)), ("x-csrf", "1".to_owned())],
            stack,
            plain: "/web/home",
            identity: &[("x-user-id", "42"), ("x-user-scopes", "*")],
            // Not the logout, which would end the session the rest are sent with.
            paths: Vec::leak(WEB_PATHS.iter().copied().filter(|p| *p != "/bff/logout").collect()),
            queries: WEB_QUERIES,
            origins: WEB_ORIGINS,
            passthrough: &["/api/catalog/", "/api/uploads", "/api/notifications/"],
        }
    });
}
