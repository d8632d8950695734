//! `/v2/<kind>`: create, list, fetch and update resources, and `/v2/me`.
//! Creating a resource or completing a task or subtask queues notifications
//! in the same transaction.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};

use super::{AppState, authenticate, json_type, parse_object, read_body, read_short};
use crate::error::ApiError;
use crate::events::Kind;
use crate::metrics::METRICS;
use crate::store::{self, Change, ResourceError};

/// Fields hookd sets; a client cannot.
const SERVER_FIELDS: [&str; 4] = ["id", "created_by", "created_at", "updated_at"];

fn parse_kind(text: &str) -> Result<Kind, ApiError> {
    Kind::parse(text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no resource kind {text:?}; use one of projects, tasks, subtasks, clients, events"
        ))
    })
}

fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::Projects => r#"{"name": "Website relaunch"}"#,
        Kind::Tasks => r#"{"name": "Write the brief"}"#,
        Kind::Subtasks => r#"{"name": "Collect quotes", "task_id": "<task id>"}"#,
        Kind::Clients => r#"{"name": "Acme Ltd"}"#,
        Kind::Events => r#"{"title": "Kick-off", "start": "2026-12-04T10:00:00Z"}"#,
    }
}

/// The fields each kind requires, as (name, what it holds).
fn required_fields(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Projects | Kind::Tasks | Kind::Clients => &[("name", "a non-empty string")],
        Kind::Subtasks => &[
            ("name", "a non-empty string"),
            ("task_id", "the id of a task"),
        ],
        Kind::Events => &[
            ("title", "a non-empty string"),
            ("start", "an RFC 3339 time"),
        ],
    }
}

/// Checks a whole document of `kind`, hookd's own fields excluded. Returns
/// the error sentence for the client.
fn validate_document(
    kind: Kind,
    fields: &Map<String, Value>,
    max_bytes: usize,
) -> Result<(), String> {
    for (name, _) in required_fields(kind) {
        match fields.get(*name) {
            None | Some(Value::Null) => {
                return Err(format!(
                    "missing field `{name}`; a {} needs it, as in {}",
                    singular(kind),
                    example(kind)
                ));
            }
            Some(Value::String(text)) if text.chars().any(char::is_control) => {
                return Err(format!(
                    "field `{name}` contains a control character such as a line break; send it on one line"
                ));
            }
            Some(Value::String(text)) if !text.trim().is_empty() => {}
            Some(Value::String(_)) => return Err(format!("field `{name}` must not be empty")),
            Some(other) => {
                return Err(format!(
                    "field `{name}` must be a string, not a {}",
                    json_type(other)
                ));
            }
        }
    }
    if kind == Kind::Events {
        let start = fields
            .get("start")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if humantime::parse_rfc3339_weak(start).is_err() {
            return Err(format!(
                "field `start` {start:?} is not an RFC 3339 time; write it like \"2026-12-04T10:00:00Z\""
            ));
        }
    }
    if kind.completed_event().is_some()
        && let Some(value) = fields.get("completed")
        && !value.is_boolean()
    {
        return Err(format!(
            "field `completed` must be true or false, not a {}",
            json_type(value)
        ));
    }
    let size = Value::Object(fields.clone()).to_string().len();
    if size > max_bytes {
        return Err(format!(
            "the {} document is {size} bytes, over the limit of {max_bytes}; store less in it",
            singular(kind)
        ));
    }
    Ok(())
}

fn singular(kind: Kind) -> &'static str {
    match kind {
        Kind::Projects => "project",
        Kind::Tasks => "task",
        Kind::Subtasks => "subtask",
        Kind::Clients => "client",
        Kind::Events => "event",
    }
}

fn reject_server_fields(fields: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(name) = SERVER_FIELDS
        .iter()
        .find(|name| fields.contains_key(**name))
    {
        return Err(ApiError::BadRequest(format!(
            "field `{name}` is set by hookd; remove it from the request"
        )));
    }
    Ok(())
}

fn resource_error(error: ResourceError, kind: Kind, id: &str) -> ApiError {
    match error {
        ResourceError::Invalid(message) => ApiError::BadRequest(message),
        ResourceError::NotFound => {
            ApiError::NotFound(format!("no {} with id {id:?}", singular(kind)))
        }
        ResourceError::Store(error) => error.into(),
    }
}

fn document_response(
    mut response: actix_web::HttpResponseBuilder,
    document: String,
) -> HttpResponse {
    response.content_type("application/json").body(document)
}

fn after_change(state: &AppState, change: &Change) {
    if let Some(event) = change.event {
        METRICS
            .notifications_created
            .with_label_values(&[event.as_str()])
            .inc_by(change.notifications as u64);
    }
    if change.notifications > 0 {
        state.waker.wake();
    }
}

pub async fn create(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = parse_kind(&path.into_inner())?;
    let caller = authenticate(&request, &state).await?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let fields = parse_object(&body, example(kind))?;
    reject_server_fields(&fields)?;
    validate_document(kind, &fields, state.max_document_bytes).map_err(ApiError::BadRequest)?;

    let change = state
        .store
        .create_resource(&caller, kind, fields, state.base_url.clone())
        .await
        .map_err(|error| resource_error(error, kind, ""))?;
    after_change(&state, &change);

    let mut response = HttpResponse::Created();
    response.insert_header(("Location", format!("/v2/{kind}/{}", change.resource.id)));
    Ok(document_response(response, change.resource.document))
}

/// Number of resources `GET /v2/<kind>` returns without `limit`.
const DEFAULT_LIST_LIMIT: u32 = 10;
/// Largest `limit` that `GET /v2/<kind>` accepts.
const MAX_LIST_LIMIT: u32 = 100;

/// The query parameters of `GET /v2/<kind>`.
struct ListQuery {
    limit: u32,
    completed: Option<bool>,
}

/// Parses the query string of `GET /v2/<kind>`. Unknown parameters are
/// ignored, but a repeated `limit` or `completed` is an error.
fn parse_list_query(kind: Kind, query: &str) -> Result<ListQuery, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|error| {
            ApiError::BadRequest(format!(
                "invalid query string ({error}); send one like ?limit=10"
            ))
        })?
        .into_inner();
    let single = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut values = pairs.iter().filter(|(key, _)| key == name);
        let first = values.next().map(|(_, value)| value.as_str());
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is given more than once; send it once"
            )));
        }
        Ok(first)
    };

    let limit = match single("limit")? {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_LIST_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter `limit` is {text:?}; it must be a whole number from 1 to {MAX_LIST_LIMIT}"
                ))
            })?,
    };

    let completed = match single("completed")? {
        None => None,
        Some(_) if kind.completed_event().is_none() => {
            return Err(ApiError::BadRequest(format!(
                "query parameter `completed` applies to tasks and subtasks, not to {kind}; remove it"
            )));
        }
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(text) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter `completed` is {text:?}; it must be true or false"
            )));
        }
    };
    Ok(ListQuery { limit, completed })
}

/// Lists the caller's own resources of a kind, newest first, as
/// `{"data": [...]}` (`GET /v2/<kind>`).
pub async fn list(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = parse_kind(&path.into_inner())?;
    let caller = authenticate(&request, &state).await?;
    let query = parse_list_query(kind, request.query_string())?;

    let store = state.store.clone();
    let documents = web::block(move || {
        store.list_resources(caller.user_id, kind, query.completed, query.limit)
    })
    .await??;
    // Each document is stored as serialized JSON, so the list is joined
    // without parsing them again.
    let body = format!("{{\"data\":[{}]}}", documents.join(","));
    Ok(document_response(HttpResponse::Ok(), body))
}

/// Returns the user and domain that the request's `key` and `domain`
/// headers authenticate (`GET /v2/me`).
pub async fn me(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": caller.user_name,
        "domain": caller.domain_name,
    })))
}

pub async fn show(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let kind = parse_kind(&kind)?;
    let caller = authenticate(&request, &state).await?;
    let lookup = id.clone();
    let domain_id = caller.domain_id;
    let resource = read_short(&state, move |connection| {
        store::get_resource(connection, domain_id, kind, &lookup)
    })
    .await?;
    match resource {
        Some(resource) => Ok(document_response(HttpResponse::Ok(), resource.document)),
        None => Err(ApiError::NotFound(format!(
            "no {} with id {id:?}",
            singular(kind)
        ))),
    }
}

pub async fn update(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let kind = parse_kind(&kind)?;
    if kind.completed_event().is_none() {
        return Err(ApiError::MethodNotAllowed(format!(
            "{kind} cannot be changed; PATCH works on tasks and subtasks"
        )));
    }
    let caller = authenticate(&request, &state).await?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let patch = parse_object(&body, r#"{"completed": true}"#)?;
    reject_server_fields(&patch)?;

    let max_bytes = state.max_document_bytes;
    let validator = Box::new(move |fields: &Map<String, Value>| {
        let mut client_fields = fields.clone();
        for name in SERVER_FIELDS {
            client_fields.remove(name);
        }
        validate_document(kind, &client_fields, max_bytes)
    });
    let change = state
        .store
        .patch_resource(&caller, kind, &id, patch, validator, state.base_url.clone())
        .await
        .map_err(|error| resource_error(error, kind, &id))?;
    after_change(&state, &change);
    Ok(document_response(
        HttpResponse::Ok(),
        change.resource.document,
    ))
}
