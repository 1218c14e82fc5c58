//! The service behind every passthrough route: checks the path of a request the table found a
//! route for, and forwards it through the route's upstream's outbound stack, both bodies
//! streaming.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::{ALLOW, CONTENT_LENGTH};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use pin_project_lite::pin_project;

use super::headers::{self, Forwarding};
use super::path::unsafe_path;
use super::pattern::with_query;
use super::route::ProxyRoute;
use super::tunnel::{Opening, tunnel};
use crate::config::IpNet;
use crate::error::BffError;
use crate::limit::TunnelPlaces;
use crate::problem::Problem;
use crate::request::{Ctx, RequestMeta};
use crate::serve::Tunnels;
use crate::session::SessionToken;
use crate::upstream::{Body, BoxError, Streamed, UpstreamError, UpstreamErrorKind};

/// What every passthrough route of a gateway shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) trusted: Vec<IpNet>,
    /// `https` when the listener terminates TLS.
    pub(crate) proto: &'static str,
    /// The credential header verified on protected routes (`Authorization`, or the API-key
    /// header): not forwarded from them.
    pub(crate) credential: Option<HeaderName>,
    /// Whether the BFF has browser sessions: their cookies are taken out of every forwarded
    /// request, public routes' included, and an upstream's answer cannot set them.
    pub(crate) session_cookies: bool,
    /// `server.idle_timeout`: how long a WebSocket tunnel may go without a byte either way.
    pub(crate) idle_timeout: std::time::Duration,
}

/// Forwards each request to the route the dispatch found for it (an extension).
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pub(crate) shared: Arc<Shared>,
}

impl tower::Service<Request> for Forward {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(request).await) })
    }
}

impl Forward {
    async fn forward(self, mut request: Request) -> Response {
        let Some(route) = request.extensions_mut().remove::<Arc<ProxyRoute>>() else {
            tracing::error!("a passthrough request without its route was forwarded; refused");
            return BffError::Internal("a passthrough request without its route".into()).into_response();
        };
        if let Some(why) = unsafe_path(request.uri().path()) {
            return BffError::bad_request("INVALID_PATH", why).into_response();
        }
        // Held until the response head is here (an upload's body sent).
        let _place = match route.in_flight.as_ref().map(tokio::sync::Semaphore::try_acquire) {
            Some(Err(_)) => return overloaded(),
            Some(Ok(place)) => Some(place),
            None => None,
        };
        let (mut parts, body) = request.into_parts();
        // Built at its exact size: the call's URI then takes the string without copying it.
        let target = {
            let path = parts.uri.path();
            let Some(captures) = route.pattern.captures(path) else {
                return BffError::NotFound("no route for this path".to_owned()).into_response();
            };
            match &route.rewrite {
                Some(rewrite) => rewrite.render(&captures, parts.uri.query()),
                None => with_query(path, parts.uri.query()),
            }
        };
        let ctx = match Ctx::from_request_parts(&mut parts, &()).await {
            Ok(ctx) => match route.timeout {
                Some(timeout) => ctx.within(timeout),
                None => ctx,
            },
            Err(problem) => return problem.into_response(),
        };
        let limit = route.max_body_bytes.unwrap_or_else(|| {
            let meta = parts.extensions.get::<Arc<RequestMeta>>();
            meta.map_or(0, |m| m.max_body_bytes(m.policy.get().map(Arc::as_ref))) as u64
        });
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large(limit);
        }
        let forwarding = Forwarding {
            peer: parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0),
            trusted: &self.shared.trusted,
            proto: self.shared.proto,
            // The host as `crate::request::host` reads it, kept as a value (a `Host` is not copied).
            host: parts
                .headers
                .get(axum::http::header::HOST)
                .cloned()
                .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())),
            version: parts.version,
            // A bearer client's own token goes upstream on a route that forwards tokens.
            credential: (!route.policy.access.is_public() && !route.forward_token)
                .then_some(self.shared.credential.as_ref())
                .flatten(),
            session_cookies: self.shared.session_cookies,
        };
        let session_token = parts.extensions.get::<SessionToken>().filter(|_| route.forward_token).cloned();
        // A WebSocket on a route that takes them: how it was opened, the client's side of the
        // tunnel, and where the connection's task will run it.
        // Only a route that takes WebSockets, or a `CONNECT`, has the headers looked at.
        let opening = (route.websocket || parts.method == axum::http::Method::CONNECT)
            .then(|| Opening::of(&parts.method, parts.version, &parts.headers, &parts.extensions));
        let upgrade = match opening.flatten() {
            // Only a WebSocket opening has a `CONNECT` on the wire; it is not for this route.
            Some(Opening::ExtendedConnect) if !route.websocket => {
                let detail = format!("the route `{}` does not take WebSockets", route.policy.pattern);
                return BffError::bad_request("WEBSOCKET_NOT_ALLOWED", detail).into_response();
            }
            Some(opening) if route.websocket => {
                match (parts.extensions.remove::<OnUpgrade>(), parts.extensions.get::<Tunnels>().cloned()) {
                    (Some(client), Some(tunnels)) => Some((opening, client, tunnels)),
                    _ => return BffError::bad_request("UPGRADE_UNSUPPORTED", NO_UPGRADE).into_response(),
                }
            }
            // An HTTP/1.1 upgrade on a route without WebSockets is forwarded as a plain `GET`.
            _ => None,
        };
        let mut forwarded = std::mem::take(&mut parts.headers);
        if headers::request_headers(&mut forwarded, &forwarding).is_err() {
            // The operator learns which route (the log); the client, only what happened.
            tracing::warn!(route = %route.describe(), "a request looped back through BFFs; its upstream may be a BFF");
            let detail = "this request has passed through BFFs more times than a chain of them needs: a loop";
            return Problem::new(StatusCode::LOOP_DETECTED, "LOOP_DETECTED", detail).into_response();
        }
        if let Some(token) = session_token.as_ref().and_then(SessionToken::authorization) {
            forwarded.insert(axum::http::header::AUTHORIZATION, token);
        }
        route.request_headers.apply(&mut forwarded);
        if let Some((opening, ..)) = &upgrade {
            opening.upstream_headers(&mut forwarded);
            // Opened upstream as HTTP/1.1 asks: a `GET` (an HTTP/2 client sent `CONNECT`).
            parts.method = axum::http::Method::GET;
        }
        // Set when the body crosses the limit; only a request with a body has one (a WebSocket's
        // bytes go through the tunnel, not a body).
        let tripped = (!body.is_end_stream() && upgrade.is_none()).then(|| Arc::new(AtomicBool::new(false)));
        let body = match &tripped {
            None => Body::empty(),
            Some(tripped) => Body::stream(ClientBody {
                inner: body,
                left: limit,
                limit,
                tripped: tripped.clone(),
                credential: self.shared.credential.clone(),
            }),
        };
        let upstream = route.target.pick();
        let call = upstream.request::<Streamed>(parts.method.clone(), target).forwarded(forwarded, body);
        match call.send_now(&ctx).await {
            Ok(answer) => {
                let (parts_out, body_out) = answer.into_inner().into_parts();
                let body_out = match small_body(&parts_out.headers) {
                    true => match Prefetched::first_of(body_out).await {
                        Ok(body) => axum::body::Body::new(body),
                        Err(cause) => {
                            let kind = UpstreamErrorKind::Transport;
                            let error = UpstreamError::new(Arc::from(upstream.name()), kind).with_cause(cause);
                            return BffError::from(error).into_response();
                        }
                    },
                    false => axum::body::Body::new(body_out),
                };
                let mut response = Response::from_parts(parts_out, body_out);
                let switched = match upgrade {
                    Some((opening, client, tunnels)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                        match response.extensions_mut().remove::<OnUpgrade>() {
                            Some(upstream) => {
                                // Its places under concurrency limits are the tunnel's, for its life.
                                let places = parts.extensions.remove::<TunnelPlaces>();
                                let idle = self.shared.idle_timeout;
                                tunnels.run(Box::pin(async move {
                                    let _places = places;
                                    tunnel(client, upstream, idle).await;
                                }));
                                Some(opening)
                            }
                            None => return BffError::bad_request("UPGRADE_UNSUPPORTED", NO_UPGRADE).into_response(),
                        }
                    }
                    _ => None,
                };
                headers::response_headers(response.headers_mut(), parts.version);
                if self.shared.session_cookies {
                    crate::session::remove_set_cookies(response.headers_mut());
                }
                if let Some(opening) = switched {
                    // A switched answer has no body: its bytes go through the tunnel.
                    let (mut head, _) = response.into_parts();
                    opening.answer(&mut head.status, &mut head.headers);
                    response = Response::from_parts(head, axum::body::Body::empty());
                }
                route.response_headers.apply(response.headers_mut());
                response
            }
            Err(_) if tripped.is_some_and(|t| t.load(Ordering::Relaxed)) => too_large(limit),
            Err(error) => BffError::from(error).into_response(),
        }
    }
}

/// The largest answer of known length whose first frame is awaited before its head is handed
/// on, so the connection writes head and body in one go rather than in two writes and two wakes.
const PREFETCH_MAX: u64 = 64 * 1024;

/// Whether the answer's `Content-Length` says it is small (not a stream of unknown length, such
/// as server-sent events, whose head must not wait for the first event).
fn small_body(headers: &axum::http::HeaderMap) -> bool {
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    length.is_some_and(|n| n > 0 && n <= PREFETCH_MAX)
}

pin_project! {
    /// An upstream body whose first frame has been read already.
    struct Prefetched {
        first: Option<Frame<Bytes>>,
        #[pin]
        rest: Body,
    }
}

impl Prefetched {
    /// Reads `body`'s first frame.
    async fn first_of(mut body: Body) -> Result<Self, BoxError> {
        use http_body_util::BodyExt;
        let first = body.frame().await.transpose()?;
        Ok(Self { first, rest: body })
    }
}

impl http_body::Body for Prefetched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => this.rest.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// Why a WebSocket cannot be tunnelled.
const NO_UPGRADE: &str = "a WebSocket is opened with an HTTP/1.1 upgrade (GET with Connection: Upgrade and Upgrade: \
                          websocket) or an HTTP/2 extended CONNECT (:protocol websocket)";

fn too_large(limit: u64) -> Response {
    BffError::body_too_large(limit).into_response()
}

/// A 503 for a request over its route's `max_in_flight`.
fn overloaded() -> Response {
    let detail = "this route has as many requests in flight as it takes; try again shortly".to_owned();
    BffError::Unavailable { code: "ROUTE_OVERLOADED", detail }.into_response()
}

/// A 405 naming the methods `allowed`, written as a handler route's (axum's) are: `GET,HEAD`.
pub(crate) fn method_not_allowed(allowed: &[axum::http::Method]) -> Response {
    let mut response = BffError::MethodNotAllowed.into_response();
    let allow = allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",");
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// The body limit was crossed while the request body streamed.
#[derive(Debug, thiserror::Error)]
#[error("the request body is over the route's limit of {0} bytes")]
struct OverLimit(u64);

pin_project! {
    /// A client's request body as it goes upstream: failing (and saying so in `tripped`) once
    /// more than the limit has arrived, its trailer fields cleaned as the headers were.
    struct ClientBody {
        #[pin]
        inner: axum::body::Body,
        left: u64,
        limit: u64,
        tripped: Arc<AtomicBool>,
        credential: Option<HeaderName>,
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.left {
                        this.tripped.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(OverLimit(*this.limit).into())));
                    }
                    *this.left -= len;
                } else if let Some(trailers) = frame.trailers_mut() {
                    headers::request_trailers(trailers, this.credential.as_ref());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
