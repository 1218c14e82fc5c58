//! A browser app's files, embedded in the binary and served by the BFF itself, so the page and
//! its API share one origin (the session cookie needs no CORS). Each answer carries a strong
//! `ETag` (a `304` for a matching `If-None-Match`), `Cache-Control: no-cache` (revalidated on
//! every load, so a new build is seen at once), and the headers that keep the page from being
//! framed or running anything but its own files: `Content-Security-Policy: default-src 'self'`,
//! `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`.
//! A file that gzip makes smaller is compressed once, when it is added, and sent so to a client
//! whose `Accept-Encoding` takes gzip (`Vary: Accept-Encoding` on every answer; the compressed
//! one's ETag is the weak form of the file's, as nginx's is).
//!
//! ```no_run
//! # use bff_core::{Routes, assets::Assets};
//! let routes: Routes = Assets::new()
//!     .file("/", "text/html; charset=utf-8", b"<!doctype html><script type=module src=/app.js></script>")
//!     .file("/app.js", "text/javascript; charset=utf-8", b"document.body.append('hello')")
//!     .routes();
//! ```

use axum::body::Bytes;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY, VARY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::routing::get;
use crate::{Access, Routes};

/// The policy every asset is served with: its own origin only, never framed.
const CSP: HeaderValue =
    HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'");

/// Embedded files, each a public `GET` (and `HEAD`) route.
#[derive(Debug, Default)]
#[must_use = "assets are served once turned into routes"]
pub struct Assets {
    files: Vec<(&'static str, Asset)>,
}

#[derive(Debug, Clone)]
struct Asset {
    content_type: HeaderValue,
    body: &'static [u8],
    etag: HeaderValue,
    /// The body in gzip, when that is smaller, and its ETag.
    gzip: Option<(Bytes, HeaderValue)>,
}

/// `body` in gzip, when that saves at least a tenth of it.
fn gzipped(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, body).ok()?;
    let compressed = encoder.finish().ok()?;
    (compressed.len() < body.len() - body.len() / 10).then(|| Bytes::from(compressed))
}

impl Assets {
    /// No files yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `body` at `path` as `content_type`.
    ///
    /// # Panics
    /// When `content_type` is not a valid header value (a literal in the caller's code).
    pub fn file(mut self, path: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        let digest = xxhash_rust::xxh3::xxh3_128(body);
        let etag = HeaderValue::try_from(format!("\"{digest:032x}\"")).unwrap_or(HeaderValue::from_static("\"\""));
        let weak = HeaderValue::try_from(format!("W/\"{digest:032x}\"")).unwrap_or(HeaderValue::from_static("W/\"\""));
        let content_type = HeaderValue::from_static(content_type);
        let gzip = gzipped(body).map(|bytes| (bytes, weak));
        self.files.push((path, Asset { content_type, body, etag, gzip }));
        self
    }

    /// The files as public routes, to merge into a BFF's [`Routes`].
    pub fn routes(self) -> Routes {
        self.files.into_iter().fold(Routes::new(), |routes, (path, asset)| {
            let handler = move |headers: HeaderMap| {
                let asset = asset.clone();
                async move { asset.answer(&headers) }
            };
            routes.route(path, get(handler), Access::public())
        })
    }
}

impl Asset {
    fn answer(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/").as_bytes() == self.etag.as_bytes());
        let gzip = self.gzip.as_ref().filter(|_| crate::shape::accepted_weights(headers).1 > 0);
        let mut response = match (fresh, gzip) {
            (true, _) => StatusCode::NOT_MODIFIED.into_response(),
            (false, Some((bytes, _))) => bytes.clone().into_response(),
            (false, None) => self.body.into_response(),
        };
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        match gzip {
            Some((_, etag)) => {
                headers.insert(ETAG, etag.clone());
                if !fresh {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
            }
            None => {
                headers.insert(ETAG, self.etag.clone());
            }
        }
        if self.gzip.is_some() {
            headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(CONTENT_SECURITY_POLICY, CSP);
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_is_revalidated_by_its_etag_and_never_framed() {
        let asset = Assets::new().file("/", "text/html", b"<p>hi</p>").files.remove(0).1;
        let first = asset.answer(&HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[X_FRAME_OPTIONS], "DENY");
        assert!(first.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'self'"));
        let etag = first.headers()[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag.clone());
        assert_eq!(asset.answer(&again).status(), StatusCode::NOT_MODIFIED);
        again.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset.answer(&again).status(), StatusCode::OK);
        let changed = Assets::new().file("/", "text/html", b"<p>ho</p>").files.remove(0).1;
        assert_ne!(changed.answer(&HeaderMap::new()).headers()[ETAG], etag);
    }

    /// A file gzip makes smaller goes out in gzip to a client that takes it, compressed once;
    /// every answer says it varies by `Accept-Encoding`; either ETag revalidates it.
    #[tokio::test]
    async fn a_file_goes_out_in_gzip_to_a_client_that_takes_it() {
        static SCRIPT: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| "document.body.append('hello');\n".repeat(100).into_bytes());
        let asset = Assets::new().file("/app.js", "text/javascript", &SCRIPT).files.remove(0).1;
        let asking = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            headers
        };
        // The coding an answer is in, and what it says it varies by.
        let coding = |answer: &Response| {
            let text = |name| answer.headers().get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned());
            (text(CONTENT_ENCODING), text(VARY))
        };
        let varies = Some("accept-encoding".to_owned());
        let plain = asset.answer(&HeaderMap::new());
        assert_eq!(coding(&plain), (None, varies.clone()));
        let strong = plain.headers()[ETAG].clone();
        assert_eq!(axum::body::to_bytes(plain.into_body(), usize::MAX).await.unwrap(), SCRIPT.as_slice());
        let gzip = asset.answer(&asking("br;q=1, gzip;q=0.5"));
        assert_eq!(coding(&gzip), (Some("gzip".to_owned()), varies.clone()));
        let weak = gzip.headers()[ETAG].clone();
        assert_eq!(weak.to_str().unwrap(), format!("W/{}", strong.to_str().unwrap()));
        let sent = axum::body::to_bytes(gzip.into_body(), usize::MAX).await.unwrap();
        assert!(sent.len() < SCRIPT.len() / 10, "{} bytes", sent.len());
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&sent[..]), &mut decoded).unwrap();
        assert_eq!(decoded, *SCRIPT);
        // Excluded, or not named: the file as it is.
        for value in ["gzip;q=0", "br", "identity"] {
            assert_eq!(coding(&asset.answer(&asking(value))), (None, varies.clone()), "{value}");
        }
        for tag in [strong, weak] {
            let mut again = asking("gzip");
            again.insert(IF_NONE_MATCH, tag.clone());
            let fresh = asset.answer(&again);
            assert_eq!(fresh.status(), StatusCode::NOT_MODIFIED, "{tag:?}");
            assert_eq!(coding(&fresh), (None, varies.clone()));
        }
        // A file gzip does not make smaller goes out as it is, and does not vary.
        let tiny = Assets::new().file("/", "text/html", b"<p>hi</p>").files.remove(0).1;
        assert_eq!(coding(&tiny.answer(&asking("gzip"))), (None, None));
    }
}
