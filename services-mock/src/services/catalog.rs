//! catalog: `GET /products/{sku}` and the batch `GET /products?skus=a,b,c` (unknown skus are left out);
//! `GET /moved/{sku}`, a `301` to the product; and the streams of `streams.rs`, `GET /files/{bytes}`
//! and `PUT /uploads`.
//!
//! Products change rarely and are the same for every caller, so, as a real catalog would, it
//! says so: `Cache-Control: public, max-age=60, stale-if-error=300` and a strong `ETag`, with a
//! `304 Not Modified` for a matching `If-None-Match`.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;

use crate::data;

/// The most skus one batch call may ask for.
const MAX_BATCH: usize = 100;

/// What a product answer says about caching it.
pub const CACHE_CONTROL: &str = "public, max-age=60, stale-if-error=300";

/// `body` as JSON with its caching headers, or `304` when the caller already has it.
fn cacheable(request: &HeaderMap, body: &impl serde::Serialize) -> Response {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return super::error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the answer");
    };
    // FNV-1a over the body: the same products, the same tag.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let etag = format!("\"{hash:016x}\"");
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL)),
        (header::ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""))),
    ];
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

pub(crate) fn router() -> Router {
    Router::new()
        .route("/products", get(products_batch))
        .route("/products/{sku}", get(product_get))
        .route("/files/{bytes}", get(super::streams::file_get))
        .route("/uploads", put(super::streams::upload_put))
        .route("/moved/{sku}", get(moved_get))
}

/// `GET /moved/{sku}`: a product's old address, `301` to `/products/{sku}`.
async fn moved_get(Path(sku): Path<String>) -> Response {
    let location = format!("/products/{}", sku.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""));
    match HeaderValue::from_str(&location) {
        Ok(location) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response(),
        Err(_) => super::not_found("product", &sku),
    }
}

async fn product_get(headers: HeaderMap, Path(sku): Path<String>) -> Response {
    match data::sku_index(&sku) {
        Some(index) => cacheable(&headers, &data::product(index)),
        None => super::not_found("product", &sku),
    }
}

#[derive(Deserialize)]
struct BatchQuery {
    skus: Option<String>,
}

async fn products_batch(headers: HeaderMap, query: Result<Query<BatchQuery>, QueryRejection>) -> Response {
    let Ok(Query(BatchQuery { skus: Some(skus) })) = query else {
        return super::error(StatusCode::BAD_REQUEST, "missing `skus` query parameter");
    };
    let skus: Vec<&str> = skus.split(',').filter(|s| !s.is_empty()).collect();
    if skus.len() > MAX_BATCH {
        return super::error(StatusCode::BAD_REQUEST, format!("at most {MAX_BATCH} skus per call"));
    }
    let products: Vec<_> = skus.iter().filter_map(|s| data::sku_index(s)).map(data::product).collect();
    cacheable(&headers, &products)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::builder().uri(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn products_say_how_to_cache_them_and_revalidate() {
        for uri in ["/products/SKU-0001", "/products?skus=SKU-0001,SKU-0002"] {
            let first = get(uri, None).await;
            assert_eq!(first.status(), StatusCode::OK);
            assert_eq!(first.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
            let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
            let again = get(uri, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri}");
            assert_eq!(again.headers()[header::ETAG], etag.as_str());
            assert_eq!(get(uri, Some("\"other\"")).await.status(), StatusCode::OK);
        }
        let other = get("/products/SKU-0002", None).await;
        let one = get("/products/SKU-0001", None).await;
        assert_ne!(other.headers()[header::ETAG], one.headers()[header::ETAG]);
    }
}
