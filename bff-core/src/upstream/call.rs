//! Typed calls: [`Call`] describes one request (any method, headers, a JSON body); what it yields
//! is chosen by its output type through [`Decode`]: a JSON `T` from a 2xx answer, a [`Reply`]
//! of any status with its headers, or a [`Streamed`] response whose body is not read.
//!
//! A call stays a light description (method, path, and headers and body only when it has them)
//! until it is sent: its future is then small, and so is every fan-out and handler future that
//! holds it (a future's whole size is copied whenever it is moved or boxed). The `http::Request`
//! is built just before it goes into the stack, and the answer, already read by the client, is
//! decoded without another await.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::outgoing::{CallContext, Outgoing};
use super::transport::MAX_BODY_BYTES;
use super::{Body, BoxError, Upstream, UpstreamError, UpstreamErrorKind};
use crate::idempotency::{self, IDEMPOTENCY_KEY, IdempotencyKey};

/// The headers the outbound stack sets on a call: request id, deadline, two identity headers,
/// `Host`, `traceparent` and `tracestate`.
const CALL_HEADERS: usize = 7;

/// A described but not yet sent upstream call; it yields a `T` (see [`Decode`]).
///
/// Built by [`Upstream::get`] and its siblings, refined with [`Call::header`] and [`Call::json`],
/// sent inside a fan-out (`ctx.fanout((call.required(), …))`) or alone with [`Call::send`].
/// A path, header or body that cannot be used fails the call when it is sent, as a 500 (our bug).
#[must_use = "a Call does nothing until it is sent or runs in a fan-out"]
pub struct Call<T> {
    upstream: Upstream,
    method: Method,
    path: String,
    /// Headers and body, for the calls that have them (a GET usually has neither).
    extra: Option<Box<Extra>>,
    _output: PhantomData<fn() -> T>,
}

#[derive(Default)]
struct Extra {
    headers: HeaderMap,
    body: Body,
    /// Why the call cannot be built, found while it was described.
    invalid: Option<String>,
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("upstream", &self.upstream.name())
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T> Call<T> {
    pub(crate) fn new(upstream: Upstream, method: Method, path: String) -> Self {
        Self { upstream, method, path, extra: None, _output: PhantomData }
    }

    /// The upstream this call goes to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn invalid(mut self, why: String) -> Self {
        self.extra().invalid.get_or_insert(why);
        self
    }

    /// Adds a request header (`Idempotency-Key`, `If-None-Match`, …).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: fmt::Display,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.extra().headers.append(name, value);
                self
            }
            (Err(e), _) => self.invalid(format!("invalid header name: {e}")),
            (_, Err(e)) => self.invalid(format!("invalid header value: {e}")),
        }
    }

    /// Forwards a client's `Idempotency-Key`, when there is one, so a repeated write is one write.
    ///
    /// The upstream sees it scoped to the caller (an `Idempotency-Key` set with [`Call::header`]
    /// too): the same key from two tenants or two users is two keys there.
    pub fn idempotency_key(self, key: Option<&IdempotencyKey>) -> Self {
        match key {
            Some(key) => self.header(IDEMPOTENCY_KEY, key.0.clone()),
            None => self,
        }
    }

    /// Sends `body` as JSON (`Content-Type: application/json`).
    pub fn json(self, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.body(HeaderValue::from_static("application/json"), bytes),
            Err(e) => self.invalid(format!("the JSON body cannot be serialized: {e}")),
        }
    }

    /// Sends `bytes` with `content_type`.
    pub fn body(mut self, content_type: HeaderValue, bytes: impl Into<Bytes>) -> Self {
        let extra = self.extra();
        extra.body = Body::from(bytes.into());
        extra.headers.insert(CONTENT_TYPE, content_type);
        self
    }

    /// Sends `headers` as they are and `body` as it streams: a proxied request's. The stack still
    /// sets what it owns (request id, deadline, identity, `Host`).
    pub(crate) fn forwarded(mut self, headers: HeaderMap, body: Body) -> Self {
        let extra = self.extra();
        extra.headers = headers;
        extra.body = body;
        self
    }

    /// Yields the answer of any status with its headers, for a handler that decides per status.
    pub fn reply(self) -> Call<Reply> {
        Call { upstream: self.upstream, method: self.method, path: self.path, extra: self.extra, _output: PhantomData }
    }

    /// Yields the response as it arrives, its body unread (proxying). The deadline and the
    /// per-try timeout bound the wait for the response head, not the reading of the body.
    pub fn streamed(self) -> Call<Streamed> {
        Call { upstream: self.upstream, method: self.method, path: self.path, extra: self.extra, _output: PhantomData }
    }

    /// The request this call describes, with its context, or why it cannot be sent.
    fn into_outgoing(self, context: CallContext) -> Result<Outgoing, UpstreamError> {
        let name = &self.upstream.inner.name;
        let invalid = |why: String| UpstreamError::new(name.clone(), UpstreamErrorKind::Request).with_cause(why);
        let uri = Uri::try_from(self.path).map_err(|e| invalid(format!("invalid path: {e}")))?;
        if uri.scheme().is_some() || !uri.path().starts_with('/') {
            return Err(invalid(format!("`{uri}` is not a path starting with `/`")));
        }
        if let Some(segment) = dot_segment(uri.path()) {
            let error = UpstreamError::new(name.clone(), UpstreamErrorKind::DotSegment(segment.into_owned()));
            return Err(error.with_cause(format!("the path `{}` climbs out of its resource", uri.path())));
        }
        let mut request = Request::new(Body::empty());
        match self.extra {
            Some(extra) => {
                let Extra { headers, body, invalid: why } = *extra;
                if let Some(why) = why {
                    return Err(invalid(why));
                }
                *request.headers_mut() = headers;
                *request.body_mut() = body;
            }
            // Room for what the stack sets (request id, deadline, identity, `Host`, the trace) in
            // one allocation, where growing from empty takes two.
            None => *request.headers_mut() = HeaderMap::with_capacity(CALL_HEADERS),
        }
        // Every value: a second `Idempotency-Key` left as the client sent it would let it choose
        // the key an upstream that reads the last one sees.
        if request.headers().contains_key(IDEMPOTENCY_KEY)
            && let header::Entry::Occupied(mut keys) = request.headers_mut().entry(IDEMPOTENCY_KEY)
        {
            for key in keys.iter_mut() {
                *key = idempotency::scoped(context.caller.as_ref(), key);
            }
        }
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        Ok(Outgoing::new(request, context))
    }
}

/// The first segment of `path` that is `.` or `..` once percent-decoded (`%2e%2e`, `.%2E`), or
/// whose decoded text holds such a piece between encoded slashes or backslashes (`..%2Fadmin`),
/// a piece with path parameters included (`..;x`, which servers that drop them read as `..`):
/// an upstream, or a proxy before it, resolves those to another resource than the one named.
///
/// Every call's path is checked here, so no handler can forget it: [`encode`](super::encode)
/// leaves dots as they are, since `.` is unreserved and an id may contain one.
fn dot_segment(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    // Most paths hold neither a dot nor an escape, and so no dot, however decoded: one scan.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return None;
    }
    let dots = |piece: &str| is_dot_name(piece.as_bytes());
    path.split('/').find_map(|segment| {
        if dots(segment) || segment.split('\\').any(dots) {
            return Some(segment.into());
        }
        if !segment.contains('%') {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        decoded.split(['/', '\\']).any(dots).then_some(decoded)
    })
}

/// Whether a path piece (one segment, decoded or not) names `.` or `..`: itself, or with path
/// parameters, which servers that drop them (Tomcat, and so Spring) read as `..` (`..;x`).
pub(crate) fn is_dot_name(piece: &[u8]) -> bool {
    matches!(piece.split(|&b| b == b';').next(), Some(b"." | b".."))
}

impl<T: Decode> Call<T> {
    /// Sends the call under a request's deadline, request id and caller identity (`&ctx`, a
    /// handler's [`Ctx`](crate::Ctx)), and decodes the answer. Like any future, it does nothing
    /// until it is awaited: a `send` dropped unawaited sent nothing.
    pub fn send(self, ctx: impl Into<CallContext>) -> impl Future<Output = Result<T, UpstreamError>> + Send + 'static {
        self.send_with(ctx.into(), true)
    }

    /// [`Call::send`], the call made now rather than when its future is first polled: for a
    /// caller that awaits it at once (a fan-out's part, a passthrough route), where it saves
    /// moving the call's future once.
    pub(crate) fn send_now(
        self,
        ctx: impl Into<CallContext>,
    ) -> impl Future<Output = Result<T, UpstreamError>> + Send + 'static {
        self.send_with(ctx.into(), false)
    }

    /// Sends the call with `request_id`, ending it at `deadline` whatever happens inside, on
    /// no caller's behalf (no identity headers): for the gateway's own calls, such as a JWKS
    /// fetch.
    pub fn send_within(
        self,
        request_id: HeaderValue,
        deadline: Instant,
    ) -> impl Future<Output = Result<T, UpstreamError>> + Send + 'static {
        // `streamed` is set from `T` by `send_with`, as for every call.
        let context =
            CallContext { request_id, deadline, streamed: false, caller: None, parent_span: None, attempts: None };
        self.send_with(context, true)
    }

    /// The request is built and handed to the stack here, before the future first runs, and
    /// the stack makes the call then or on the future's first poll (`on_first_poll`): the future
    /// holds only the stack's (one boxed) future, so a fan-out or handler holding calls stays
    /// small, and nothing else is allocated for it.
    fn send_with(self, mut context: CallContext, on_first_poll: bool) -> Sending<T> {
        context.streamed = T::STREAMED;
        let upstream = self.upstream.clone();
        let sent = match self.into_outgoing(context) {
            Ok(outgoing) => upstream.inner.stack.send_call(outgoing, on_first_poll),
            Err(error) => Box::pin(std::future::ready(Err(error.into()))),
        };
        Sending { upstream, start: None, sent: Some(sent), _output: PhantomData }
    }
}

/// The future of a sent call: the stack's answer, decoded, and the call recorded in the
/// upstream's metrics. Dropped while its exchange is in flight, it hands the exchange to the
/// upstream to finish (`upstream/abandon.rs`).
struct Sending<T> {
    upstream: Upstream,
    /// When it was first polled; `None` before (nothing was sent yet).
    start: Option<Instant>,
    /// The stack's future; replaced, when the stack answered a stream the call did not ask for
    /// (an innermost service of one's own, such as a test's), by one reading it whole; `None`
    /// once it is done.
    sent: Option<BoxFuture<'static, Result<Response<Body>, BoxError>>>,
    _output: PhantomData<fn() -> T>,
}

impl<T: Decode> Future for Sending<T> {
    type Output = Result<T, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let start = *this.start.get_or_insert_with(Instant::now);
        let name = &this.upstream.inner.name;
        let result = loop {
            let Some(sent) = this.sent.as_mut() else {
                let error = "a finished call was polled again";
                break Err(UpstreamError::new(name.clone(), UpstreamErrorKind::Request).with_cause(error));
            };
            match ready!(sent.as_mut().poll(cx)) {
                Err(e) => break Err(UpstreamError::from_stack(name, e)),
                Ok(response) if T::STREAMED || response.body().is_buffered() => break T::decode(response, name),
                Ok(response) => this.sent = Some(Box::pin(read_whole(response, name.clone()))),
            }
        };
        this.sent = None;
        if let Err(error) = &result
            && *error.kind() == UpstreamErrorKind::Decode
        {
            this.upstream.inner.stack.undecodable();
        }
        this.upstream.inner.metrics.record(result.as_ref().map(|_| ()), start.elapsed());
        Poll::Ready(result)
    }
}

impl<T> Drop for Sending<T> {
    fn drop(&mut self) {
        // Polled but not finished: the request may be on the wire. Never polled: nothing was
        // sent, and nothing should be (a call sent now is polled at once by its caller).
        if self.start.is_some()
            && let Some(sent) = self.sent.take()
        {
            self.upstream.inner.abandoned.take(sent);
        }
    }
}

/// `response` with its body read whole, under the body limit.
async fn read_whole(response: Response<Body>, upstream: Arc<str>) -> Result<Response<Body>, BoxError> {
    let (parts, body) = response.into_parts();
    match crate::body::collect(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(Response::from_parts(parts, Body::from(bytes))),
        Err(e) => Err(UpstreamError::new(upstream, UpstreamErrorKind::Transport).with_cause(e).into()),
    }
}

/// What a call yields, made from the upstream's response.
///
/// Implemented for every `T: DeserializeOwned` (a 2xx JSON body; an empty one reads as `null`,
/// so `()` and `Option<T>` fit a `204`), for [`Reply`] and for [`Streamed`]. The body is already
/// read whole when `decode` runs, unless [`Decode::STREAMED`].
pub trait Decode: Sized + Send + 'static {
    /// Whether the body is left unread for the caller ([`Streamed`]).
    const STREAMED: bool = false;

    /// Makes the output from `response`; `upstream` names the service in errors.
    fn decode(response: Response<Body>, upstream: &Arc<str>) -> Result<Self, UpstreamError>;
}

impl<T: DeserializeOwned + Send + 'static> Decode for T {
    fn decode(response: Response<Body>, upstream: &Arc<str>) -> Result<Self, UpstreamError> {
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(upstream, status));
        }
        json(&response.into_body().into_buffered().unwrap_or_default(), upstream)
    }
}

/// A JSON body decoded as `T`; an empty one reads as `null`, so `()` and `Option<T>` fit a `204`.
fn json<T: DeserializeOwned>(body: &[u8], upstream: &Arc<str>) -> Result<T, UpstreamError> {
    let json: &[u8] = if body.is_empty() { b"null" } else { body };
    crate::json::from_bytes(json)
        .map_err(|e| UpstreamError::new(upstream.clone(), UpstreamErrorKind::Decode).with_cause(e))
}

/// The error of an answer whose status the caller does not take (`UPSTREAM_BAD_STATUS`).
fn status_error(upstream: &Arc<str>, status: StatusCode) -> UpstreamError {
    UpstreamError::new(upstream.clone(), UpstreamErrorKind::Status(status)).with_cause(status)
}

/// An answer of any status, its headers and its whole body (under the body limit).
#[derive(Debug, Clone)]
pub struct Reply {
    upstream: Arc<str>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers (`ETag`, `Cache-Control`, `Location`, …).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body decoded as JSON (empty reads as `null`), whatever the status.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, UpstreamError> {
        json(&self.body, &self.upstream)
    }

    /// The error a JSON call would have failed with on this status (`UPSTREAM_BAD_STATUS`), for
    /// the statuses a handler does not handle itself.
    pub fn error(&self) -> UpstreamError {
        status_error(&self.upstream, self.status)
    }
}

impl Decode for Reply {
    fn decode(response: Response<Body>, upstream: &Arc<str>) -> Result<Self, UpstreamError> {
        let (parts, body) = response.into_parts();
        let body = body.into_buffered().unwrap_or_default();
        Ok(Self { upstream: upstream.clone(), status: parts.status, headers: parts.headers, body })
    }
}

/// A response of any status whose body is read by the caller, as it arrives.
#[derive(Debug)]
pub struct Streamed(pub Response<Body>);

impl Streamed {
    /// The response.
    pub fn into_inner(self) -> Response<Body> {
        self.0
    }
}

impl Decode for Streamed {
    const STREAMED: bool = true;

    fn decode(response: Response<Body>, _upstream: &Arc<str>) -> Result<Self, UpstreamError> {
        Ok(Self(response))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::upstream::{UpstreamSettings, encode};

    type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, Bytes)>>>;

    /// An upstream that records each request and answers `status` with `body` and an ETag.
    fn recording(status: StatusCode, answer: &'static str) -> (Upstream, Seen) {
        let seen = Seen::default();
        let recorded = seen.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await?.to_bytes();
                recorded.lock().unwrap().push((parts.method, parts.uri.to_string(), parts.headers, bytes));
                let mut response = Response::new(Body::from(Bytes::from_static(answer.as_bytes())));
                *response.status_mut() = status;
                response.headers_mut().insert("etag", HeaderValue::from_static("\"v1\""));
                Ok::<_, super::super::BoxError>(response)
            }
        });
        (Upstream::from_service("orders", UpstreamSettings::bare(), service, &Metrics::new()), seen)
    }

    async fn send<T: Decode>(call: Call<T>) -> Result<T, UpstreamError> {
        call.send_within(HeaderValue::from_static("req-7"), Instant::now() + Duration::from_secs(5)).await
    }

    /// A call is made when its future is first polled, as futures do: a `send` dropped unawaited
    /// sent nothing. One sent now (a fan-out's part, a passthrough) is made at once.
    #[tokio::test]
    async fn a_call_is_made_when_awaited_unless_sent_now() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = made.clone();
        let service = tower::service_fn(move |_: Request<Body>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, super::super::BoxError>(Response::new(Body::from("{}"))))
        });
        let up = Upstream::from_service("orders", UpstreamSettings::bare(), service, &Metrics::new());
        let made = || made.load(std::sync::atomic::Ordering::SeqCst);
        let ctx = crate::Ctx::detached(Duration::from_secs(5), 4);
        let unawaited = up.get::<Value>("/o").send(&ctx);
        assert_eq!(made(), 0, "made before it was awaited");
        drop(unawaited);
        assert_eq!(made(), 0, "a dropped `send` sent nothing");
        let now = up.get::<Value>("/o").send_now(&ctx);
        assert_eq!(made(), 1, "`send_now` makes it at once");
        now.await.unwrap();
        up.get::<Value>("/o").send(&ctx).await.unwrap();
        assert_eq!(made(), 2);
    }

    #[tokio::test]
    async fn writes_carry_their_method_headers_and_json_body() {
        let (orders, seen) = recording(StatusCode::CREATED, r#"{"id":4208}"#);
        let call = orders
            .post::<Value>("/orders")
            .header("idempotency-key", "k-1")
            .json(&json!({"user": "42", "items": [{"sku": "SKU-0001", "qty": 1}]}));
        assert_eq!(send(call).await.unwrap(), json!({"id": 4208}));
        for (method, call) in [
            (Method::PUT, orders.put::<Value>("/orders/1")),
            (Method::PATCH, orders.patch::<Value>("/orders/1")),
            (Method::DELETE, orders.delete::<Value>("/orders/1")),
        ] {
            send(call).await.unwrap();
            assert_eq!(seen.lock().unwrap().last().unwrap().0, method);
        }
        let seen = seen.lock().unwrap();
        let (method, uri, headers, body) = &seen[0];
        assert_eq!((method, uri.as_str()), (&Method::POST, "/orders"));
        assert_eq!(headers["idempotency-key"], idempotency::scoped(None, &HeaderValue::from_static("k-1")));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-request-id"], "req-7", "set by the journal from the call context");
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap()["items"][0]["qty"], 1);
    }

    #[tokio::test]
    async fn a_reply_keeps_any_status_its_headers_and_body() {
        let (orders, _) = recording(StatusCode::CONFLICT, r#"{"error":"taken"}"#);
        let reply = send(orders.post::<Reply>("/orders")).await.unwrap();
        assert_eq!(reply.status(), StatusCode::CONFLICT);
        assert_eq!(reply.headers()["etag"], "\"v1\"");
        assert_eq!(reply.json::<Value>().unwrap(), json!({"error": "taken"}));
        assert_eq!(reply.error().kind(), &UpstreamErrorKind::Status(StatusCode::CONFLICT));
        // The same answer as JSON is an error that names the status.
        let error = send(orders.post::<Value>("/orders")).await.unwrap_err();
        assert_eq!(error.kind(), &UpstreamErrorKind::Status(StatusCode::CONFLICT));
    }

    #[tokio::test]
    async fn an_empty_2xx_body_decodes_as_null() {
        let (orders, _) = recording(StatusCode::NO_CONTENT, "");
        send(orders.delete::<()>("/orders/1")).await.unwrap();
        assert_eq!(send(orders.delete::<Option<Value>>("/orders/1")).await.unwrap(), None);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_a_decode_error_naming_why() {
        let error = json::<Value>(b"{\"name\":\"Gr\xffce\"}", &"orders".into()).unwrap_err();
        assert_eq!(error.kind(), &UpstreamErrorKind::Decode);
        assert!(format!("{error:?}").contains("invalid utf-8 sequence"), "{error:?}");
    }

    #[tokio::test]
    async fn a_streamed_response_is_handed_over_unread() {
        let (orders, _) = recording(StatusCode::OK, "chunk");
        let streamed = send(orders.get::<Streamed>("/orders/export")).await.unwrap().into_inner();
        assert_eq!(streamed.headers()["etag"], "\"v1\"");
        assert_eq!(streamed.into_body().collect().await.unwrap().to_bytes(), "chunk");
    }

    #[tokio::test]
    async fn a_call_we_cannot_build_is_our_bug_and_sends_nothing() {
        let (orders, seen) = recording(StatusCode::OK, "{}");
        for call in [
            orders.get::<Value>("/users/a b"),
            orders.get::<Value>("http://elsewhere.example/x"),
            orders.get::<Value>("/x").header("bad header", "v"),
            orders.get::<Value>("/x").header("x-ok", "line\nbreak"),
        ] {
            let error = send(call).await.unwrap_err();
            assert_eq!(error.kind(), &UpstreamErrorKind::Request, "{error:?}");
            assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_call_leaves_with_a_dot_segment_in_its_path() {
        let (orders, seen) = recording(StatusCode::OK, "{}");
        for (path, value) in [
            ("/orders/..", ".."),
            ("/orders/.", "."),
            ("/orders/%2e%2e", ".."),
            ("/orders/%2E%2E?x=1", ".."),
            ("/orders/.%2e/items", ".."),
            ("/users/../admin", ".."),
            ("/orders/..%2Fadmin", "../admin"),
            ("/orders/a%5C..%5Cb", "a\\..\\b"),
            ("/orders/x\\..", "x\\.."),
            ("/orders/..;x/admin", "..;x"),
            ("/orders/.;", ".;"),
            ("/orders/%2e%2e;jsessionid=1", "..;jsessionid=1"),
        ] {
            let call = orders.get::<Value>(path);
            let error = send(call).await.unwrap_err();
            assert_eq!(error.kind(), &UpstreamErrorKind::DotSegment(value.to_owned()), "{path}");
            assert_eq!((error.status(), error.code()), (StatusCode::BAD_REQUEST, "INVALID_ID"), "{path}");
            let as_lookup = crate::BffError::from(error).when_not_found("no such order");
            assert_eq!(as_lookup.status(), StatusCode::NOT_FOUND, "{path}");
        }
        // A write is refused the same way, by the same builder.
        let error = send(orders.post::<Value>(format!("/orders/{}/cancel", encode("..")))).await.unwrap_err();
        assert!(error.is_dot_segment());
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
        // Dots inside a segment, and dots in the query, are ordinary characters.
        let ordinary = [
            "/products/v1.2",
            "/files/...",
            "/orders/..x",
            "/orders?user=..",
            "/a/.hidden",
            "/p/%2e%2e%2e",
            "/o/a;..",
            "/o/...;x",
        ];
        for path in ordinary {
            send(orders.get::<Value>(path)).await.unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), ordinary.len());
    }
}
