//! The HTTP API: routes, shared state, and the helpers every handler uses
//! (authentication, body reading, JSON parsing).

mod deliveries;
mod hooks;
mod openapi;
mod resources;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::delivery::destination::Guard;
use crate::delivery::{Monitor, Waker};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::secrets;
use crate::store::{self, Caller, Store, StoreError};

/// State shared by every handler.
pub struct AppState {
    pub store: Store,
    pub waker: Waker,
    pub monitor: Monitor,
    pub guard: Arc<Guard>,
    /// Base of resource URLs, without a trailing slash.
    pub base_url: String,
    pub max_body_bytes: usize,
    pub max_document_bytes: usize,
    pub max_target_url_length: usize,
    pub max_subscriptions_per_user: u32,
    pub secret_rotation_overlap: std::time::Duration,
}

/// Registers every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi::document))
        .service(
            web::resource("/v2/hooks")
                .route(web::post().to(hooks::subscribe))
                .route(web::get().to(hooks::list))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET, POST")
                })),
        )
        .service(
            web::resource("/v2/hooks/{id}/secret/rotate")
                .route(web::post().to(deliveries::rotate_secret))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "POST")
                })),
        )
        .service(
            web::resource("/v2/hooks/{id}/deliveries")
                .route(web::get().to(deliveries::list))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET")
                })),
        )
        .service(
            web::resource("/v2/hooks/{id}/deliveries/{notification}/redeliver")
                .route(web::post().to(deliveries::redeliver))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "POST")
                })),
        )
        .service(
            web::resource("/v2/hooks/{id}")
                .route(web::delete().to(hooks::unsubscribe))
                .route(web::get().to(hooks::show))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET, DELETE")
                })),
        )
        .service(
            web::resource("/v2/me")
                .route(web::get().to(resources::me))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET")
                })),
        )
        .service(
            web::resource("/v2/{kind}")
                .route(web::post().to(resources::create))
                .route(web::get().to(resources::list))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET, POST")
                })),
        )
        .service(
            web::resource("/v2/{kind}/{id}")
                .route(web::get().to(resources::show))
                .route(web::patch().to(resources::update))
                .default_service(web::to(|request: HttpRequest| {
                    method_not_allowed(request, "GET, PATCH")
                })),
        )
        .default_service(web::to(not_found));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database answers and every delivery thread runs.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let database = web::block(move || store.ping()).await;
    let problem = match database {
        Ok(Ok(())) => state.monitor.problem(),
        Ok(Err(error)) => Some(format!("the database does not answer: {error}")),
        Err(error) => Some(format!("the database check failed: {error}")),
    };
    match problem {
        None => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Some(reason) => {
            log::warn!("not ready: {reason}");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": reason }))
        }
    }
}

/// Prometheus text format; queue figures are read from the database at
/// each scrape.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    match web::block(move || store.queue_stats()).await {
        Ok(Ok(stats)) => {
            METRICS.notifications_waiting.set(stats.waiting);
            METRICS.subscriptions_active.set(stats.active_subscriptions);
            let age = stats
                .oldest_due_at
                .map(|due_at| (crate::store::now_ms() - due_at).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            METRICS.oldest_due_age.set(age);
        }
        Ok(Err(error)) => log::error!("cannot read queue figures for metrics: {error}"),
        Err(error) => log::error!("cannot read queue figures for metrics: {error}"),
    }
    METRICS
        .notifications_in_flight
        .set(state.monitor.in_flight() as i64);
    METRICS.sender_threads.set(state.monitor.senders() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(METRICS.render())
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    )))
}

/// 405 with the `Allow` header listing the methods the route takes.
async fn method_not_allowed(request: HttpRequest, allowed: &'static str) -> HttpResponse {
    let error = ApiError::MethodNotAllowed(format!(
        "method {} is not allowed on {}; use {allowed}",
        request.method(),
        request.path()
    ));
    let mut response = actix_web::ResponseError::error_response(&error);
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allowed),
    );
    response
}

/// Authenticates a request by its `key` and `domain` headers.
pub async fn authenticate(
    request: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<Caller, ApiError> {
    let header = |name: &str| -> Result<String, ApiError> {
        let value = request.headers().get(name).ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "missing header `{name}`; send your API key in `key` and your domain in `domain`"
            ))
        })?;
        value
            .to_str()
            .map(|text| text.trim().to_owned())
            .map_err(|_| ApiError::Unauthorized(format!("header `{name}` is not valid text")))
    };
    let key = header("key")?;
    let domain = header("domain")?;
    if !secrets::looks_like_api_key(&key) {
        return Err(ApiError::Unauthorized(
            "invalid API key: a key is 40 lowercase hex characters".into(),
        ));
    }

    let found = read_short(state, move |connection| {
        store::find_caller(connection, &key, &domain)
    })
    .await?;
    found.ok_or_else(|| {
        ApiError::Unauthorized("invalid API key or domain, or the key was revoked".into())
    })
}

/// Runs a short read, such as one indexed row or one user's subscriptions.
/// With a read connection free at once, the read runs on this worker
/// thread and saves a hand-off to the blocking thread pool. Otherwise it
/// runs on that pool, so waiting for a connection blocks no worker.
// NOTE: a read in WAL mode can still get SQLITE_BUSY in rare cases, such as
// while another connection recovers the WAL, and the busy timeout then
// stalls this worker thread.
pub async fn read_short<T, F>(state: &AppState, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
{
    if let Some(connection) = state.store.try_reader() {
        return Ok(read(&connection)?);
    }
    let store = state.store.clone();
    let result = web::block(move || {
        let connection = store.reader()?;
        read(&connection)
    })
    .await?;
    Ok(result?)
}

/// Reads the whole request body, stopping with 413 as soon as it passes
/// `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body is over the limit of {limit} bytes; send less"
        ))
    };
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| match error {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a body as a JSON object, whatever its `Content-Type` header.
pub fn parse_object(body: &[u8], example: &str) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "request body is empty; send a JSON object like {example}"
        )));
    }
    let text = std::str::from_utf8(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "request body is not valid UTF-8 ({error}); send UTF-8 JSON"
        ))
    })?;
    serde_json::from_str::<NoDuplicateKeys>(text).map_err(|error| {
        ApiError::BadRequest(format!(
            "request body is not valid JSON ({error}); send a JSON object like {example}"
        ))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|error| {
        ApiError::BadRequest(format!(
            "request body is not valid JSON ({error}); send a JSON object like {example}"
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::BadRequest(format!(
            "request body is a JSON {}, not an object; send a JSON object like {example}",
            json_type(&other)
        ))),
    }
}

/// Returns the JSON type name of a value, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Formats milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// A JSON document that deserializes only when no object in it repeats a
/// key. serde_json's `Value` keeps the last of repeated keys silently, which
/// would hide a client's mistake.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<NoDuplicateKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut sequence: A,
    ) -> Result<NoDuplicateKeys, A::Error> {
        while sequence.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_unit<E>(self) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_rejected_at_any_depth() {
        let example = "{}";
        assert!(parse_object(br#"{"a": 1, "a": 2}"#, example).is_err());
        assert!(parse_object(br#"{"a": {"b": 1, "b": 1}}"#, example).is_err());
        assert!(parse_object(br#"{"a": [{"b": 1}, {"b": 2}]}"#, example).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_object(deep.as_bytes(), "{}").is_err());
    }
}
