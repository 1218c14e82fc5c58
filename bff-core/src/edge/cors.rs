//! tower-http's CORS layer, for the requests that can be cross-origin ones.
//!
//! A request without `Origin` is no CORS request, and tower-http gives every such request the
//! same headers (`Vary`, `Access-Control-Expose-Headers`, and those its configuration sets
//! whatever the origin): a function of the configuration alone, which it still builds into a new
//! header map per request. Here they are found once, by asking the layer itself about such a
//! request at start, and copied onto each such answer; every other request goes through the
//! layer.
//!
//! tower-http answers every `OPTIONS` itself, as a preflight. Only one with `Origin` and
//! `Access-Control-Request-Method` is one (Fetch, "CORS-preflight request"); any other `OPTIONS`
//! goes to its route, as another method would (a `405` with `Allow`, a `404`, or the upstream of
//! a passthrough route that takes it), with the headers the layer gives a `GET` from its origin.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use futures::FutureExt as _;
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceExt as _};

/// tower-http's [`CorsLayer`](tower_http::cors::CorsLayer), with what it adds to an answer to a
/// request that sent no `Origin` worked out once.
#[derive(Debug, Clone)]
pub(crate) struct CorsLayer {
    layer: Arc<tower_http::cors::CorsLayer>,
    /// The headers of a request without `Origin`; none when the layer's answer to one could not
    /// be found at start (an origin predicate that awaits), and every request then goes through
    /// the layer.
    plain: Option<Arc<HeaderMap>>,
}

impl CorsLayer {
    pub(crate) fn new(layer: tower_http::cors::CorsLayer) -> Self {
        let plain = headers_for_get(&layer, HeaderMap::new()).map(Arc::new);
        Self { layer: Arc::new(layer), plain }
    }
}

/// What `layer` adds to the answer to a `GET` with `headers`, asked of the layer itself; none
/// when its origin predicate awaits.
fn headers_for_get(layer: &tower_http::cors::CorsLayer, headers: HeaderMap) -> Option<HeaderMap> {
    let answer = tower::service_fn(|_: Request| std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty()))));
    let mut request = Request::new(Body::empty());
    *request.headers_mut() = headers;
    let response = layer.layer(answer).oneshot(request).now_or_never()?;
    response.ok().map(Response::into_parts).map(|(parts, _)| parts.headers)
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors { inner: self.layer.layer(inner), layer: self.layer.clone(), plain: self.plain.clone() }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Cors<S> {
    inner: tower_http::cors::Cors<S>,
    layer: Arc<tower_http::cors::CorsLayer>,
    plain: Option<Arc<HeaderMap>>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let from_origin = request.headers().contains_key(ORIGIN);
        let headers = if request.method() != Method::OPTIONS {
            match &self.plain {
                Some(plain) if !from_origin => plain.clone(),
                _ => return CorsFuture::Cors { future: self.inner.call(request) },
            }
        } else if !from_origin {
            self.plain.clone().unwrap_or_default()
        } else if request.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return CorsFuture::Cors { future: self.inner.call(request) };
        } else {
            // An `OPTIONS` from another origin that is no preflight: rare enough to ask the layer
            // about it each time.
            Arc::new(headers_for_get(&self.layer, request.headers().clone()).unwrap_or_default())
        };
        CorsFuture::Plain { future: self.inner.get_mut().call(request), headers }
    }
}

pin_project! {
    /// The future of [`Cors`].
    #[project = Projected]
    pub(crate) enum CorsFuture<F> {
        /// A request without `Origin`, or an `OPTIONS` that is no preflight: the inner answer,
        /// given the layer's headers.
        Plain { #[pin] future: F, headers: Arc<HeaderMap> },
        /// Any other: the layer's own.
        Cors { #[pin] future: tower_http::cors::ResponseFuture<F> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Plain { future, headers } => {
                let Ok(mut response) = ready!(future.poll(cx));
                add(response.headers_mut(), headers);
                Poll::Ready(Ok(response))
            }
            Projected::Cors { future } => future.poll(cx),
        }
    }
}

/// Adds `plain` to `headers` as tower-http adds its own: `Vary` appended to what the answer has,
/// every other name replacing the answer's (all of `plain`'s values kept).
fn add(headers: &mut HeaderMap, plain: &HeaderMap) {
    let mut last = None;
    for (name, value) in plain {
        if name == VARY || last == Some(name) {
            headers.append(name.clone(), value.clone());
        } else {
            headers.insert(name.clone(), value.clone());
        }
        last = Some(name);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header::{ACCESS_CONTROL_EXPOSE_HEADERS, ETAG};
    use axum::http::{HeaderName, HeaderValue};
    use tower_http::cors::{AllowCredentials, AllowOrigin};

    use super::*;

    /// An answer that already has a `Vary` and a header the layers may set.
    fn answer() -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
        tower::service_fn(|_: Request| async {
            let mut response = Response::new(Body::from("ok"));
            response.headers_mut().insert(VARY, HeaderValue::from_static("accept-encoding"));
            response.headers_mut().insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-inner"));
            Ok::<_, Infallible>(response)
        })
    }

    fn request(method: Method, origin: Option<&'static str>) -> Request {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        if let Some(origin) = origin {
            request.headers_mut().insert(ORIGIN, HeaderValue::from_static(origin));
        }
        request.headers_mut().insert("access-control-request-method", HeaderValue::from_static("PUT"));
        request
    }

    fn layers() -> Vec<tower_http::cors::CorsLayer> {
        let listed = vec![HeaderValue::from_static("https://app.example")];
        let allowed = listed.clone();
        vec![
            // As the BFFs build it (`app.rs`).
            tower_http::cors::CorsLayer::new()
                .allow_origin(AllowOrigin::list(listed))
                .allow_credentials(AllowCredentials::predicate(move |origin, _| allowed.contains(origin)))
                .allow_methods([Method::GET, Method::POST])
                .expose_headers([ETAG, HeaderName::from_static("ratelimit")])
                .max_age(Duration::from_secs(600)),
            tower_http::cors::CorsLayer::permissive(),
            tower_http::cors::CorsLayer::very_permissive(),
            tower_http::cors::CorsLayer::new()
                .allow_origin(HeaderValue::from_static("https://one.example"))
                .allow_credentials(true)
                .vary([ORIGIN, HeaderName::from_static("x-tenant")]),
            tower_http::cors::CorsLayer::new(),
        ]
    }

    const ORIGINS: [Option<&str>; 4] =
        [None, Some("https://app.example"), Some("https://one.example"), Some("https://evil.example")];

    /// Whatever the configuration and the request, the answer is the one tower-http's layer gives
    /// (but to an `OPTIONS` that is no preflight: below).
    #[tokio::test]
    async fn every_answer_is_the_one_the_cors_layer_gives() {
        for (i, layer) in layers().into_iter().enumerate() {
            let ours = CorsLayer::new(layer.clone());
            assert!(ours.plain.is_some(), "layer {i}: its headers are found at start");
            for method in [Method::GET, Method::POST, Method::OPTIONS] {
                for origin in ORIGINS.into_iter().filter(|origin| method != Method::OPTIONS || origin.is_some()) {
                    let want = layer.layer(answer()).oneshot(request(method.clone(), origin)).await.unwrap();
                    let got = ours.layer(answer()).oneshot(request(method.clone(), origin)).await.unwrap();
                    assert_eq!(got.status(), want.status(), "layer {i}, {method} from {origin:?}");
                    assert_eq!(got.headers(), want.headers(), "layer {i}, {method} from {origin:?}");
                    let vary: Vec<_> = got.headers().get_all(VARY).iter().collect();
                    let wanted: Vec<_> = want.headers().get_all(VARY).iter().collect();
                    assert_eq!(vary, wanted, "layer {i}, {method} from {origin:?}: `Vary` in order");
                }
            }
        }
    }

    /// A request without `Origin` is answered without the layer's per-request work, yet gets its
    /// headers; one with an `Origin` goes through the layer.
    #[tokio::test]
    async fn only_a_request_without_origin_takes_the_short_way() {
        let ours = CorsLayer::new(layers().remove(0)).layer(answer());
        assert!(matches!(ours.clone().call(request(Method::GET, None)), CorsFuture::Plain { .. }));
        assert!(matches!(
            ours.clone().call(request(Method::GET, Some("https://app.example"))),
            CorsFuture::Cors { .. }
        ));
        assert!(matches!(ours.clone().call(request(Method::OPTIONS, None)), CorsFuture::Plain { .. }));
        let response = ours.oneshot(request(Method::GET, None)).await.unwrap();
        assert_eq!(response.headers()[ACCESS_CONTROL_EXPOSE_HEADERS], "etag,ratelimit");
    }

    /// An `OPTIONS` without `Origin` or without `Access-Control-Request-Method` is no preflight:
    /// it reaches the service, as `OPTIONS`, and its answer gets the headers the layer gives a
    /// `GET` from the same origin. A preflight is still the layer's.
    #[tokio::test]
    async fn an_options_that_is_no_preflight_reaches_its_route() {
        let route = tower::service_fn(|request: Request| async move {
            let mut response = answer().oneshot(Request::new(Body::empty())).await?;
            *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
            let method = HeaderValue::from_str(request.method().as_str()).unwrap();
            response.headers_mut().insert("x-method", method);
            Ok::<_, Infallible>(response)
        });
        for (i, layer) in layers().into_iter().enumerate() {
            let ours = CorsLayer::new(layer.clone());
            for origin in ORIGINS {
                let mut options = request(Method::OPTIONS, origin);
                options.headers_mut().remove(ACCESS_CONTROL_REQUEST_METHOD);
                let got = ours.layer(route).oneshot(options).await.unwrap();
                assert_eq!(got.status(), 405, "layer {i}, from {origin:?}");
                let mut get = request(Method::GET, origin);
                get.headers_mut().remove(ACCESS_CONTROL_REQUEST_METHOD);
                let mut want = layer.layer(route).oneshot(get).await.unwrap();
                want.headers_mut().insert("x-method", HeaderValue::from_static("OPTIONS"));
                assert_eq!(got.headers(), want.headers(), "layer {i}, from {origin:?}");
            }
            let without_origin = request(Method::OPTIONS, None);
            let got = ours.layer(route).oneshot(without_origin).await.unwrap();
            assert_eq!(got.headers()["x-method"], "OPTIONS", "layer {i}: not a preflight without `Origin`");
            let preflight = request(Method::OPTIONS, Some("https://app.example"));
            let got = ours.layer(route).oneshot(preflight).await.unwrap();
            assert!(got.status().is_success() && !got.headers().contains_key("x-method"), "layer {i}: {got:?}");
        }
    }
}
