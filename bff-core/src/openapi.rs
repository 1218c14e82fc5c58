//! OpenAPI support (feature `openapi`): [`ProblemResponses`] describes, in a BFF's own document,
//! the errors every operation can answer and the form they take.
//!
//! ```
//! # use bff_core::openapi::ProblemResponses;
//! #[derive(utoipa::OpenApi)]
//! #[openapi(components(schemas(bff_core::Problem)), modifiers(&ProblemResponses))]
//! struct Api;
//! ```

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

/// The media type of every error the gateway answers (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The errors the gateway itself may answer on any operation, whatever its handler does.
const GATEWAY_ERRORS: [(&str, &str); 7] = [
    ("400", "The request is malformed: a header, the query or the path (a problem document says which)"),
    ("401", "No valid credentials"),
    ("403", "The credentials lack a scope this operation needs"),
    ("429", "Over a rate limit or quota; `Retry-After` says when to try again"),
    ("502", "An upstream service failed"),
    (
        "503",
        "An upstream service is unavailable (its circuit is open, or it is overloaded), or the gateway is shedding load",
    ),
    ("504", "An upstream service did not answer in time"),
];

/// A utoipa [`Modify`] for a BFF's document: every 4xx and 5xx response an operation declares is
/// an `application/problem+json` [`Problem`](crate::Problem); the gateway's own errors (400,
/// 401, 403, 429, 502, 503, 504) are added where an operation does not list them; and
/// `default` describes any other status as a problem too, so a client (or schemathesis) finds
/// every answer it can get in the document. The document must register `Problem` among its
/// schemas, as the example does.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                describe(operation);
            }
        }
    }
}

fn describe(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    for (status, description) in GATEWAY_ERRORS.iter().chain([&("default", "Any other error")]) {
        responses.entry((*status).to_owned()).or_insert_with(|| RefOr::T(Response::new(*description)));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status == "default" || status.starts_with('4') || status.starts_with('5');
        if let RefOr::T(response) = response
            && is_error
        {
            response.content.clear();
            let problem = Content::new(Some(Ref::from_schema_name("Problem")));
            response.content.insert(PROBLEM_JSON.to_owned(), RefOr::T(problem));
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::*;

    #[utoipa::path(get, path = "/things/{id}", params(("id" = String, Path)),
        responses((status = 200, body = String), (status = 404, body = crate::Problem)))]
    #[allow(dead_code)]
    async fn thing() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(thing), components(schemas(crate::Problem)), modifiers(&ProblemResponses))]
    struct Api;

    #[test]
    fn every_error_is_a_problem_and_the_gateways_own_are_listed() {
        let doc = serde_json::to_value(Api::openapi()).unwrap();
        let responses = &doc["paths"]["/things/{id}"]["get"]["responses"];
        let problem = serde_json::json!({"schema": {"$ref": "#/components/schemas/Problem"}});
        for status in ["400", "401", "403", "404", "429", "502", "503", "504", "default"] {
            assert_eq!(responses[status]["content"], serde_json::json!({ PROBLEM_JSON: problem }), "{status}");
        }
        assert_eq!(responses["200"]["content"]["text/plain"]["schema"]["type"], "string", "{responses}");
    }
}
