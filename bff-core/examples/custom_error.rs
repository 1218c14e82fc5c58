//! A BFF's own error type mapped to problem codes: handlers return `Result<_, CheckoutError>`,
//! and one `From` impl says which status and stable code each case is. The answer is RFC 9457
//! `application/problem+json` with that code, counted and logged as the gateway's own errors are.
//!
//! ```sh
//! cargo run -p services-mock &
//! cargo run -p bff-core --example custom_error -- --config bff-core/examples/new_bff.toml
//! ```

use std::process::ExitCode;

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bff_core::cli::Spec;
use bff_core::routing::get;
use bff_core::{Access, App, BffError, ConfigError, Gateway, Routes};

/// What can go wrong in this BFF's domain.
#[derive(Debug, thiserror::Error)]
enum CheckoutError {
    #[error("coupon {0} has expired")]
    CouponExpired(String),
    #[error("a basket holds at most {max} lines")]
    TooManyLines { max: usize },
    #[error(transparent)]
    Gateway(#[from] BffError),
}

/// Each case's status and stable code; the gateway's own errors stay as they are.
impl From<CheckoutError> for BffError {
    fn from(error: CheckoutError) -> Self {
        let detail = error.to_string();
        match error {
            CheckoutError::CouponExpired(_) => BffError::rejected(StatusCode::GONE, "COUPON_EXPIRED", detail),
            CheckoutError::TooManyLines { .. } => {
                BffError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "TOO_MANY_LINES", detail)
            }
            CheckoutError::Gateway(inner) => inner,
        }
    }
}

impl IntoResponse for CheckoutError {
    fn into_response(self) -> Response {
        BffError::from(self).into_response()
    }
}

async fn coupon(Path(code): Path<String>) -> Result<Json<serde_json::Value>, CheckoutError> {
    match code.as_str() {
        "WINTER" => Ok(Json(serde_json::json!({ "code": code, "percent": 10 }))),
        "SUMMER" => Err(CheckoutError::CouponExpired(code)),
        "BULK" => Err(CheckoutError::TooManyLines { max: 50 }),
        _ => Err(BffError::NotFound(format!("no coupon {code}")).into()),
    }
}

fn app(gateway: &Gateway) -> Result<App, ConfigError> {
    gateway.router(Routes::new().route("/coupons/{code}", get(coupon), Access::public()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let spec = Spec::new("custom-error", "A BFF with errors of its own.", "bff-core/examples/new_bff.toml");
    bff_core::cli::main(spec, app).await
}

#[cfg(test)]
#[path = "support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_case_is_a_problem_with_its_status_and_code() {
        let bff = support::start(include_str!("new_bff.toml"), app).await;
        for (code, status, problem) in [
            ("WINTER", 200, None),
            ("SUMMER", 410, Some("COUPON_EXPIRED")),
            ("BULK", 422, Some("TOO_MANY_LINES")),
            ("NONE", 404, Some("NOT_FOUND")),
        ] {
            let answer = bff.http.get(format!("{}/coupons/{code}", bff.base)).send().await.unwrap();
            assert_eq!(answer.status(), status, "{code}");
            let body: serde_json::Value = answer.json().await.unwrap();
            if let Some(problem) = problem {
                assert_eq!(body["code"], problem, "{body}");
                assert_eq!(body["status"], status, "{body}");
            }
        }
    }
}
