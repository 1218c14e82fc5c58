//! The smallest honest passthrough: hyper's HTTP/1.1 server and hyper-util's pooled client,
//! streaming each request to one upstream with its path's prefix rewritten, no policies (no
//! headers added or removed, no log, no metrics, no limits). The harness's floor for what a
//! passthrough route on this stack can cost, next to nginx.
//!
//! Usage: `minimal-proxy LISTEN UPSTREAM_URL FROM_PREFIX TO_PREFIX`, e.g.
//! `minimal-proxy 127.0.0.1:8080 http://127.0.0.1:9000 /api/catalog/ /`. `MINIMAL_PROXY_RUNTIME`
//! picks tokio's runtime: `current` (one thread), a number of worker threads, or by default one
//! per core.

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    from: String,
    to: String,
}

type Answer = Response<http_body_util::Either<Incoming, String>>;

async fn forward(proxy: Arc<Proxy>, mut request: Request<Incoming>) -> Result<Answer, Infallible> {
    let refused = |status: StatusCode| {
        let mut response = Response::new(http_body_util::Either::Right(String::new()));
        *response.status_mut() = status;
        Ok(response)
    };
    let Some(rest) = request.uri().path_and_query().and_then(|p| p.as_str().strip_prefix(&proxy.from)) else {
        return refused(StatusCode::NOT_FOUND);
    };
    let Ok(path) = PathAndQuery::try_from(format!("{}{rest}", proxy.to)) else {
        return refused(StatusCode::BAD_REQUEST);
    };
    let mut parts = proxy.upstream.clone().into_parts();
    parts.path_and_query = Some(path);
    let Ok(uri) = Uri::from_parts(parts) else { return refused(StatusCode::BAD_REQUEST) };
    *request.uri_mut() = uri;
    request.headers_mut().remove(http::header::HOST);
    match proxy.client.request(request).await {
        Ok(response) => Ok(response.map(http_body_util::Either::Left)),
        Err(_) => refused(StatusCode::BAD_GATEWAY),
    }
}

fn main() -> std::io::Result<()> {
    let runtime = match std::env::var("MINIMAL_PROXY_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Ok(n) => {
            let threads = n.parse().map_err(|_| {
                std::io::Error::other(format!("MINIMAL_PROXY_RUNTIME: `{n}` is neither `current` nor a number"))
            })?;
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
        }
        Err(_) => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, from, to] = <[String; 4]>::try_from(args)
        .map_err(|_| std::io::Error::other("usage: minimal-proxy LISTEN UPSTREAM_URL FROM_PREFIX TO_PREFIX"))?;
    let upstream: Uri = upstream.parse().map_err(std::io::Error::other)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let proxy = Arc::new(Proxy { client, upstream, from, to });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(proxy.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
