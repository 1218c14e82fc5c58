//! A browser app's files, embedded in the binary and served by the BFF itself, so the page and
//! its API share one origin (the session cookie needs no CORS). Each answer carries a strong
//! `ETag` (a `304` for a matching `If-None-Match`), `Cache-Control: no-cache` (revalidated on
//! every load, so a new build is seen at once), and the headers that keep the page from being
//! framed or running anything but its own files: `Content-Security-Policy: default-src 'self'`,
//! `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`.
//!
//! ```no_run
//! # use bff_core::{Routes, assets::Assets};
//! let routes: Routes = Assets::new()
//!     .file("/", "text/html; charset=utf-8", b"<!doctype html><script type=module src=/app.js></script>")
//!     .file("/app.js", "text/javascript; charset=utf-8", b"document.body.append('hello')")
//!     .routes();
//! ```

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
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
        let content_type = HeaderValue::from_static(content_type);
        self.files.push((path, Asset { content_type, body, etag }));
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
        let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { self.body.into_response() };
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        headers.insert(ETAG, self.etag.clone());
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
}
