//! `GET /openapi.json`: the OpenAPI 3.1 description of this API, compiled
//! in from `openapi.json` at the repository root.

use actix_web::HttpResponse;

/// The document exactly as committed. The integration test
/// `tests/integration/openapi.rs` checks that it lists the same routes and
/// methods as `configure` registers.
const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}
