//! The service one connection calls for each request: the app, with the peer's address, and
//! every request and response reporting to the connection's [`ConnState`].
//!
//! It also bounds what an HTTP/2 connection may leave unread (HTTP/1.1 has one response at a
//! time). A response's bytes count as *unsent* from its head until the connection takes them:
//! what remains of a body of known length, or each frame of one of unknown length once made. A
//! frame counts until the connection asks for the next one (which it does only once it handed
//! the previous one to the protocol) or the body ends. Frames are cut to at most [`MAX_FRAME`],
//! so what the protocol holds of a stream beyond that is its send buffer
//! (`server.h2_max_send_buf_bytes`). Each stream also counts [`MAX_FRAME`] from its request to
//! the end of its response, for its first frame and its own state: a client that opens a zero
//! window and asks for a tiny answer a hundred times still holds a hundred streams, and a client
//! that sends many requests in one packet has them all taken before any is answered.
//!
//! A new stream that would take a connection's unsent bytes over `server.h2_max_unsent_bytes`
//! is refused (`RST_STREAM` with `REFUSED_STREAM`, which tells the client it was not processed
//! and is safe to send again) rather than answered into a pile its client does not read; the
//! first stream of a connection with nothing unsent is always taken. A stream is admitted on
//! its [`MAX_FRAME`] charge, before its answer's size is known: requests taken together before
//! any answer (at most `h2_max_unsent_bytes / MAX_FRAME` of them) may each answer more than a
//! frame, so a connection's unread bytes are bounded by that many of its largest answers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use metrics::{Counter, Gauge};
use pin_project_lite::pin_project;

use super::ReloadableApp;
use super::connection::ConnState;
use crate::routes::{App, AppFuture};

/// The largest body frame handed to a connection (HTTP/2's default frame size): a bigger one is
/// handed in pieces, so that a client that reads slowly holds it here, counted, not whole in
/// the protocol's buffers.
pub(super) const MAX_FRAME: usize = 16 * 1024;

/// What every connection of a server shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// `server.h2_max_unsent_bytes`.
    pub(super) max_unsent: usize,
    /// `bff_connection_unsent_bytes`: the unsent bytes of every connection.
    pub(super) unsent: Gauge,
    /// `bff_h2_streams_refused_total`.
    pub(super) refused_streams: Counter,
}

/// See [the module docs](self).
pub(crate) struct ConnService {
    apps: ReloadableApp,
    /// The app the last request was served by, and this connection's copy of it, called for
    /// each request while it stays current (a copy a request would cost a deep clone).
    app: std::sync::Mutex<Option<(Arc<App>, App)>>,
    peer: ConnectInfo<SocketAddr>,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
}

impl ConnService {
    pub(super) fn new(apps: ReloadableApp, peer: SocketAddr, state: Arc<ConnState>, shared: Arc<Shared>) -> Self {
        Self { apps, app: std::sync::Mutex::new(None), peer: ConnectInfo(peer), state, shared }
    }

    /// Hands `request` to the current app.
    fn serve(&self, request: axum::extract::Request) -> AppFuture {
        let current = self.apps.current();
        let mut app = self.app.lock().unwrap_or_else(|e| e.into_inner());
        let app = match &mut *app {
            Some((of, app)) if Arc::ptr_eq(of, &current) => app,
            held => &mut held.insert((current.clone(), App::clone(&current))).1,
        };
        app.call_in_place(request)
    }
}

impl Clone for ConnService {
    fn clone(&self) -> Self {
        Self::new(self.apps.clone(), self.peer.0, self.state.clone(), self.shared.clone())
    }
}


impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ResponseBody>;
    type Error = h2::Error;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let mut charge = None;
        if request.version() == Version::HTTP_2 {
            let unsent = self.state.unsent();
            if unsent > 0 && unsent + MAX_FRAME > self.shared.max_unsent {
                self.shared.refused_streams.increment(1);
                return ResponseFuture { inner: None, in_flight: None, charge, head: false, shared: self.shared.clone() };
            }
            charge = Some(StreamCharge::new(&self.state, MAX_FRAME));
        }
        self.state.request_started();
        let in_flight = InFlight(self.state.clone());
        let head = request.version() == Version::HTTP_2 && request.method() == http::Method::HEAD;
        // Handlers and limits read the client's address as axum's `ConnectInfo`.
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(self.peer);
        let upgrades = match parts.version {
            Version::HTTP_11 => parts.headers.contains_key(http::header::UPGRADE),
            Version::HTTP_2 => parts.method == http::Method::CONNECT,
            _ => false,
        };
        if upgrades {
            let stream = parts.version == Version::HTTP_2;
            parts.extensions.insert(Tunnels { state: self.state.clone(), stream });
        }
        let reports = (!body.is_end_stream()).then(|| self.state.clone());
        let request = Request::from_parts(parts, axum::body::Body::new(RequestBody { inner: body, state: reports }));
        let inner = self.serve(request);
        ResponseFuture { inner: Some(inner), in_flight: Some(in_flight), charge, head, shared: self.shared.clone() }
    }
}

/// Lets the handler that switches a request's protocol hand its connection the tunnel it becomes
/// (a WebSocket): on HTTP/1.1 what the connection runs once hyper gives its socket up after the
/// `101`; on HTTP/2 one stream's, run beside the others (`serve/connection.rs`). Either way it
/// counts as part of the connection (open, closed on shutdown after the grace period). A request
/// extension, on the HTTP/1.1 requests that ask to upgrade and the HTTP/2 `CONNECT`s.
#[derive(Clone)]
pub(crate) struct Tunnels {
    state: Arc<ConnState>,
    /// An HTTP/2 stream's tunnel, not the whole connection's.
    stream: bool,
}

impl Tunnels {
    /// Runs `tunnel` as part of the connection, once the protocol has switched.
    pub(crate) fn run(&self, tunnel: futures::future::BoxFuture<'static, ()>) {
        match self.stream {
            true => super::connection::spawn_stream_tunnel(self.state.clone(), tunnel),
            false => self.state.set_tunnel(tunnel),
        }
    }
}

/// What an HTTP/2 stream counts as unsent besides its body's bytes, from its request to the end
/// of its response.
struct StreamCharge(Arc<ConnState>, usize);

impl StreamCharge {
    fn new(state: &Arc<ConnState>, bytes: usize) -> Self {
        state.add_unsent(bytes);
        Self(state.clone(), bytes)
    }
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        self.0.sub_unsent(self.1);
    }
}

/// A request in flight on its connection, from its head until its response ends.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

pin_project! {
    /// The router's answer, its body reporting to the connection; a refused stream without one.
    pub(crate) struct ResponseFuture {
        #[pin]
        inner: Option<AppFuture>,
        in_flight: Option<InFlight>,
        charge: Option<StreamCharge>,
        // An HTTP/2 `HEAD`: its answer goes without a body (see `without_body`).
        head: bool,
        shared: Arc<Shared>,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            // hyper resets the stream with the reason of the `h2::Error` it finds.
            return Poll::Ready(Err(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        };
        let mut response = match ready!(inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if *this.head {
            without_body(&mut response);
        }
        let Some(in_flight) = this.in_flight.take() else {
            return Poll::Ready(Err(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        };
        in_flight.0.moved();
        let (charge, shared) = (this.charge.take(), this.shared.clone());
        Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, in_flight, charge, shared))))
    }
}

/// The answer to a `HEAD`: its head, with the length its body would have had (RFC 9110 §9.3.2),
/// and no body. hyper leaves out the body of an answer to an HTTP/1.1 `HEAD` itself, but sends
/// it over HTTP/2, where content in an answer to `HEAD` is a protocol error (RFC 9113 §8.1.1)
/// and the client resets the stream; axum leaves it out only for a route's own answers, so every
/// refusal before a route (a `401`, a `404`, a `429`) would be such an error.
fn without_body(response: &mut axum::response::Response) {
    crate::body::length_for_head(response);
    *response.body_mut() = axum::body::Body::empty();
}

pin_project! {
    /// A request body that reports each frame read as progress.
    pub(crate) struct RequestBody {
        #[pin]
        inner: Incoming,
        state: Option<Arc<ConnState>>,
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(_)), Some(state)) = (&frame, this.state.as_ref()) {
            state.moved();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its unsent bytes against its connection (see [the module
/// docs](self)) and ends its request when it ends or is dropped.
pub(crate) struct ResponseBody {
    inner: axum::body::Body,
    /// What is left of a frame larger than [`MAX_FRAME`].
    rest: Bytes,
    /// This body's bytes counted as unsent.
    counted: usize,
    /// The length of the frame handed over last, counted until the next is asked for.
    handed: usize,
    /// Whether its whole length was counted at the start.
    known_length: bool,
    /// Its stream's own count, let go with the body (HTTP/2 only).
    _charge: Option<StreamCharge>,
    in_flight: InFlight,
    shared: Arc<Shared>,
}

impl ResponseBody {
    fn new(inner: axum::body::Body, in_flight: InFlight, charge: Option<StreamCharge>, shared: Arc<Shared>) -> Self {
        let length = inner.size_hint().exact().and_then(|n| usize::try_from(n).ok());
        let mut body = Self {
            inner,
            rest: Bytes::new(),
            counted: 0,
            handed: 0,
            known_length: length.is_some(),
            _charge: charge,
            in_flight,
            shared,
        };
        body.count(length.unwrap_or(0));
        body
    }

    fn count(&mut self, bytes: usize) {
        if bytes > 0 {
            self.counted += bytes;
            self.in_flight.0.add_unsent(bytes);
            self.shared.unsent.increment(bytes as f64);
        }
    }

    fn uncount(&mut self, bytes: usize) {
        let bytes = bytes.min(self.counted);
        if bytes > 0 {
            self.counted -= bytes;
            self.in_flight.0.sub_unsent(bytes);
            self.shared.unsent.decrement(bytes as f64);
        }
    }

    /// Hands over at most [`MAX_FRAME`] of `data`, keeping the rest for the next call.
    fn hand(&mut self, mut data: Bytes) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if data.len() > MAX_FRAME {
            self.rest = data.split_off(MAX_FRAME);
        }
        self.handed = data.len();
        self.in_flight.0.moved();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // Asked for another: the last one is the connection's now.
        let handed = std::mem::take(&mut this.handed);
        this.uncount(handed);
        if !this.rest.is_empty() {
            let rest = std::mem::take(&mut this.rest);
            return this.hand(rest);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !this.known_length {
                        this.count(data.len());
                    }
                    this.hand(data)
                }
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                let counted = this.counted;
                this.uncount(counted);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        // The upper bound first: a lower bound over the upper one is refused.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let counted = self.counted;
        self.uncount(counted);
    }
}
