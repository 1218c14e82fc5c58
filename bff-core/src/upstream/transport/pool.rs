//! The connections to one upstream base URL, kept here over hyper's connection API rather than by
//! hyper-util's pooled client: a pool serves one origin, so no key is hashed per call, and a
//! connection needs no task of its own to come back after its exchange.
//!
//! - **HTTP/1.1** connections carry one exchange at a time. A call takes the first ready one:
//!   hyper makes a connection ready again once its exchange has ended, response body included,
//!   and the server has not asked to close it. There is no check-in: a busy connection stays in
//!   the list and becomes ready by itself. Failing a ready one, the call opens a connection of its
//!   own, put first in the list: long-lived exchanges (streams) drift to the back, behind the
//!   connections short calls keep using, so a call looks past few busy ones.
//! - **HTTP/2**: one connection carries every call; it is replaced once closed (a `GOAWAY`, an
//!   unanswered ping). Calls arriving while it is being opened wait for it, not open their own.
//! - `auto`: HTTP/2 where TLS's ALPN chooses it, HTTP/1.1 otherwise.
//!
//! A request that a reused connection gave back unsent (the server closed it as the call picked
//! it) is sent again on another connection; one a fresh connection gave back is a failure, as is
//! any error after the request was written. Once a second, a sweep closes the HTTP/1.1 connections
//! idle since the sweep before the pool's idle timeout, and those idle beyond `pool_max_idle`, and
//! moves the idle ones it keeps to the front, where calls look first.
//!
//! **A cap on HTTP/1.1 connections** (`defaults.pool_max_connections_per_host`, off by default):
//! a call that finds no ready connection with the cap reached waits, first come first served,
//! for one to be ready or for room to open one (a connection closed, a dial failed), within its
//! per-try timeout. Every open connection counts, a long stream's too. Only the first waiter polls
//! the connections, so none of its wake-ups is lost to another's; once served it wakes the next.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::TryFutureExt;
use http::uri::{Authority, Parts, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower::ServiceExt;

use super::connect::{Slim, UpstreamIo};
use crate::config::UpstreamProtocol;
use crate::upstream::{Body, BoxError};

/// How often idle connections are swept.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A request on its way: its response head, or why there is none.
pub(super) type Sending = Pin<Box<dyn Future<Output = Result<Response<Incoming>, Failure>> + Send>>;

/// Why a request has no response.
pub(super) enum Failure {
    /// No connection could be opened (or set up): the request was not sent.
    Connect(BoxError),
    /// The connection failed the exchange. `unsent` is the request when it never reached the
    /// connection's wire; `reused` says whether the connection had carried an exchange before.
    Send { error: hyper::Error, unsent: Option<Box<Request<Body>>>, reused: bool },
}

/// How connections are opened and kept.
pub(super) struct Options {
    pub(super) protocol: UpstreamProtocol,
    pub(super) max_idle: usize,
    /// The most HTTP/1.1 connections open at once; `None`: no cap.
    pub(super) max_open: Option<NonZeroUsize>,
    pub(super) idle_timeout: Duration,
    pub(super) ping_interval: Duration,
    pub(super) ping_timeout: Duration,
}

pub(super) struct Pool {
    connector: Slim,
    /// `scheme://authority/`: what the connector dials, and what HTTP/2 requests name.
    origin: Uri,
    protocol: UpstreamProtocol,
    max_idle: usize,
    max_open: Option<NonZeroUsize>,
    idle_timeout: Duration,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    conns: Mutex<Conns>,
    /// Held while an HTTP/2 connection is being opened (protocol `http2`), so that concurrent
    /// calls share it.
    opening_http2: tokio::sync::Mutex<()>,
    sweeping: AtomicBool,
}

#[derive(Default)]
struct Conns {
    /// In order of preference: a call takes the first ready one, so the front stays busy and the
    /// back goes idle, to be swept.
    http1: Vec<Http1>,
    http2: Option<http2::SendRequest<Body>>,
    /// With a cap: HTTP/1.1 connections being opened, and the calls waiting, first come first.
    opening: usize,
    waiting: VecDeque<(u64, Waker)>,
    next_waiter: u64,
}

struct Http1 {
    sender: http1::SendRequest<Body>,
    /// When a sweep first found it idle; `None` since it last carried a call.
    idle_since: Option<Instant>,
}

impl Pool {
    pub(super) fn new(connector: Slim, scheme: Scheme, authority: Authority, options: &Options) -> Self {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("a scheme, an authority and `/` make a URI");
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(options.ping_interval)
            .keep_alive_timeout(options.ping_timeout)
            .keep_alive_while_idle(true);
        Self {
            connector,
            origin,
            protocol: options.protocol,
            max_idle: options.max_idle,
            max_open: options.max_open,
            idle_timeout: options.idle_timeout,
            http1: http1::Builder::new(),
            http2,
            conns: Mutex::default(),
            opening_http2: tokio::sync::Mutex::new(()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Sends `request` (its URI origin-form, `Host` set) over an open connection, or a new one.
    pub(super) fn send(self: &Arc<Self>, request: Request<Body>) -> Sending {
        match self.send_open(request) {
            Ok(sending) => sending,
            Err(request) => Box::pin(self.clone().open_and_send(request)),
        }
    }

    /// Sends over an open connection, if one is ready; otherwise hands the request back.
    #[expect(clippy::result_large_err, reason = "the request, handed back by move; a box would allocate")]
    fn send_open(&self, mut request: Request<Body>) -> Result<Sending, Request<Body>> {
        let mut conns = self.conns();
        if let Some(sender) = conns.http2.as_mut().filter(|sender| !sender.is_closed()) {
            self.absolute_form(&mut request);
            return Ok(sent(sender.try_send_request(request), true));
        }
        if !conns.waiting.is_empty() {
            // Calls waiting for a connection come first.
            return Err(request);
        }
        let mut i = 0;
        while let Some(conn) = conns.http1.get_mut(i) {
            if conn.sender.is_ready() {
                conn.idle_since = None;
                origin_form(&mut request);
                return Ok(sent(conn.sender.try_send_request(request), true));
            }
            if conn.sender.is_closed() {
                conns.http1.remove(i);
            } else {
                i += 1;
            }
        }
        Err(request)
    }

    async fn open_and_send(self: Arc<Self>, request: Request<Body>) -> Result<Response<Incoming>, Failure> {
        if self.protocol == UpstreamProtocol::Http2 {
            let opening = self.opening_http2.lock().await;
            // Another call may have opened it meanwhile.
            let request = match self.send_open(request) {
                Ok(sending) => {
                    drop(opening);
                    return sending.await;
                }
                Err(request) => request,
            };
            let io = self.dial().await?;
            let sending = self.open_http2(io, request).await?;
            drop(opening);
            return sending.await;
        }
        let (request, opening) = match self.max_open {
            Some(max) => match (Wait { pool: &self, max: max.get(), place: None, request: Some(request) }).await {
                Waited::Sent(sending) => return sending.await,
                Waited::Open(request) => (request, Some(Opening(&self))),
            },
            None => (request, None),
        };
        let io = self.dial().await?;
        if self.protocol == UpstreamProtocol::Auto && io.connected().is_negotiated_h2() {
            let sending = self.open_http2(io, request).await?;
            drop(opening);
            return sending.await;
        }
        let (mut sender, connection) = self.http1.handshake(io).await.map_err(|e| Failure::Connect(e.into()))?;
        drive(connection.with_upgrades());
        let mut request = request;
        origin_form(&mut request);
        let sending = sender.try_send_request(request).map_err(failure(false));
        self.conns().http1.insert(0, Http1 { sender, idle_since: None });
        // Listed now: counted there, no longer as being opened.
        drop(opening);
        sending.await
    }

    /// Opens a connection to the origin (TLS included), starting the sweep with the first.
    async fn dial(self: &Arc<Self>) -> Result<UpstreamIo, Failure> {
        self.sweep_in_background();
        self.connector.clone().oneshot(self.origin.clone()).await.map_err(Failure::Connect)
    }

    /// Sets up HTTP/2 on `io`, makes it the pool's HTTP/2 connection, and sends `request` on it.
    async fn open_http2(
        &self,
        io: UpstreamIo,
        mut request: Request<Body>,
    ) -> Result<impl Future<Output = Result<Response<Incoming>, Failure>> + use<>, Failure> {
        let (mut sender, connection) = self.http2.handshake(io).await.map_err(|e| Failure::Connect(e.into()))?;
        drive(connection);
        self.absolute_form(&mut request);
        let sending = sender.try_send_request(request).map_err(failure(false));
        self.conns().http2 = Some(sender);
        Ok(sending)
    }

    /// HTTP/2 carries the scheme and authority in the request (`:scheme`, `:authority`).
    fn absolute_form(&self, request: &mut Request<Body>) {
        if request.uri().scheme().is_some() {
            return;
        }
        let mut parts = Parts::default();
        parts.scheme = self.origin.scheme().cloned();
        parts.authority = self.origin.authority().cloned();
        parts.path_and_query = request.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }

    /// Whether each HTTP/1.1 connection is ready for a call, in the order calls look.
    #[cfg(test)]
    pub(super) fn http1_ready(&self) -> Vec<bool> {
        self.conns().http1.iter().map(|conn| conn.sender.is_ready()).collect()
    }

    fn conns(&self) -> MutexGuard<'_, Conns> {
        // A panic while the lock was held cannot leave the lists inconsistent: take them as is.
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the sweep, once: it lives as long as the pool.
    fn sweep_in_background(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(sweep(pool));
    }

    /// Drops the closed HTTP/1.1 connections, closes those idle for the idle timeout and the
    /// idle ones past `max_idle` (those at the back first), and puts the idle ones kept first.
    fn sweep(&self, now: Instant) {
        let mut conns = self.conns();
        let all = std::mem::take(&mut conns.http1);
        let (mut kept, mut busy) = (Vec::with_capacity(all.len()), Vec::new());
        for mut conn in all {
            if conn.sender.is_ready() {
                let since = *conn.idle_since.get_or_insert(now);
                if kept.len() < self.max_idle && now.duration_since(since) < self.idle_timeout {
                    kept.push(conn);
                }
            } else if !conn.sender.is_closed() {
                conn.idle_since = None;
                busy.push(conn);
            }
        }
        kept.append(&mut busy);
        conns.http1 = kept;
        if conns.http2.as_ref().is_some_and(http2::SendRequest::is_closed) {
            conns.http2 = None;
        }
    }
}

/// A call waiting for an HTTP/1.1 connection under the cap: in line, then, first in line, for a
/// ready connection (sent on it) or for room to open one.
struct Wait<'a> {
    pool: &'a Pool,
    max: usize,
    /// Its ticket in the line, once in it.
    place: Option<u64>,
    request: Option<Request<Body>>,
}

#[expect(clippy::large_enum_variant, reason = "the request, handed back by move; a box would allocate")]
enum Waited {
    Sent(Sending),
    /// Room to open a connection, counted in `opening` until the [`Opening`] is dropped.
    Open(Request<Body>),
}

impl Future for Wait<'_> {
    type Output = Waited;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        let this = self.get_mut();
        let mut conns = this.pool.conns();
        let place = *this.place.get_or_insert_with(|| {
            let place = conns.next_waiter;
            conns.next_waiter += 1;
            conns.waiting.push_back((place, cx.waker().clone()));
            place
        });
        if conns.waiting.front().is_none_or(|(first, _)| *first != place) {
            if let Some((_, waker)) = conns.waiting.iter_mut().find(|(p, _)| *p == place) {
                waker.clone_from(cx.waker());
            }
            return Poll::Pending;
        }
        // First in line: the only waiter that polls the connections, so each wakes it alone.
        let mut i = 0;
        while let Some(conn) = conns.http1.get_mut(i) {
            match conn.sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    conn.idle_since = None;
                    let Some(mut request) = this.request.take() else { break };
                    origin_form(&mut request);
                    let sending = sent(conn.sender.try_send_request(request), true);
                    served(&mut conns, &mut this.place);
                    return Poll::Ready(Waited::Sent(sending));
                }
                Poll::Ready(Err(_)) => {
                    conns.http1.remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if conns.http1.len() + conns.opening < this.max
            && let Some(request) = this.request.take()
        {
            conns.opening += 1;
            served(&mut conns, &mut this.place);
            return Poll::Ready(Waited::Open(request));
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        // Gave up in line (its timeout, its caller gone): out of it, and the next one told if it
        // was first.
        if self.place.is_some() {
            let mut conns = self.pool.conns();
            let first = conns.waiting.front().map(|(p, _)| *p);
            conns.waiting.retain(|(p, _)| Some(*p) != self.place);
            if first == self.place {
                wake_first(&conns);
            }
        }
    }
}

/// Takes the first waiter out of line, and wakes the next, who now polls.
fn served(conns: &mut Conns, place: &mut Option<u64>) {
    conns.waiting.pop_front();
    *place = None;
    wake_first(conns);
}

fn wake_first(conns: &Conns) {
    if let Some((_, waker)) = conns.waiting.front() {
        waker.wake_by_ref();
    }
}

/// A connection being opened under the cap: counted until dropped (open and listed, or failed),
/// and then the first waiter looks again.
struct Opening<'a>(&'a Pool);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut conns = self.0.conns();
        conns.opening -= 1;
        wake_first(&conns);
    }
}

async fn sweep(pool: Weak<Pool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = every.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(now),
            None => return,
        }
    }
}

/// Runs a connection in the background until it closes.
fn drive(connection: impl Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection failed");
        }
    });
}

/// An HTTP/1.1 request carries only the path and query (RFC 9112 §3.2.1).
fn origin_form(request: &mut Request<Body>) {
    if request.uri().scheme().is_some() {
        let path_and_query = request.uri().path_and_query().cloned();
        *request.uri_mut() = path_and_query.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
}

/// Boxes hyper's exchange, its error made a [`Failure`].
fn sent(
    exchange: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>> + Send + 'static,
    reused: bool,
) -> Sending {
    Box::pin(exchange.map_err(failure(reused)))
}

fn failure(reused: bool) -> impl FnOnce(TrySendError<Request<Body>>) -> Failure {
    move |mut e| Failure::Send { unsent: e.take_message().map(Box::new), error: e.into_error(), reused }
}
