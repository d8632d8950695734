//! `/v2/hooks/{id}/...`: signing-secret rotation, delivery history and
//! redelivery.

use actix_web::{HttpRequest, HttpResponse, web};
use log::info;
use serde::Deserialize;
use serde_json::{Value, json};

use super::hooks::attempt_json;
use super::{AppState, authenticate, rfc3339};
use crate::error::ApiError;
use crate::store::{Cursor, NotificationRecord};

/// Notifications per page when the client gives no `limit`.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

pub async fn rotate_secret(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let id = path.into_inner();
    let store = state.store.clone();
    let overlap_ms = state.secret_rotation_overlap.as_millis() as i64;
    let lookup = id.clone();
    let rotated =
        web::block(move || store.rotate_secret(caller.user_id, &lookup, overlap_ms)).await??;
    let Some(secret) = rotated else {
        return Err(ApiError::NotFound(format!(
            "no active subscription with id {id:?}"
        )));
    };
    info!("signing secret rotated hook={id}");
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "secret": secret,
        "previous_secret_valid_until": rfc3339(crate::store::now_ms() + overlap_ms),
    })))
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

fn notification_json(notification: &NotificationRecord) -> Value {
    json!({
        "id": notification.id,
        "event": notification.event,
        "resource_url": notification.resource_url,
        "state": notification.state,
        "created_at": rfc3339(notification.created_at),
        "finished_at": notification.finished_at.map(rfc3339),
        "next_attempt_at": (notification.state == "pending").then(|| rfc3339(notification.due_at)),
        "redelivery_of": notification.redelivery_of,
        "attempts": notification.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
    })
}

pub async fn list(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let id = path.into_inner();
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit {text:?} is invalid; use a number from 1 to {MAX_PAGE}"
                ))
            })?,
    };
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor {text:?} is invalid; pass the next_cursor of the previous page unchanged"
            ))
        })?),
    };

    let store = state.store.clone();
    let lookup = id.clone();
    let page =
        web::block(move || store.deliveries(caller.user_id, &lookup, limit, cursor)).await??;
    let Some(page) = page else {
        return Err(ApiError::NotFound(format!(
            "no subscription with id {id:?}"
        )));
    };
    Ok(HttpResponse::Ok().json(json!({
        "data": page.notifications.iter().map(notification_json).collect::<Vec<_>>(),
        "next_cursor": page.next.map(|cursor| cursor.encode()),
    })))
}

pub async fn redeliver(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let (id, notification) = path.into_inner();
    let store = state.store.clone();
    let (hook, original) = (id.clone(), notification.clone());
    let created = web::block(move || store.redeliver(caller.user_id, &hook, &original)).await??;
    let Some(new_id) = created else {
        return Err(ApiError::NotFound(format!(
            "no notification {notification:?} of an active subscription {id:?}; a removed subscription cannot be redelivered to"
        )));
    };
    state.waker.wake();
    info!("redelivery queued hook={id} notification={new_id} redelivery_of={notification}");
    Ok(HttpResponse::Accepted().json(json!({ "id": new_id, "redelivery_of": notification })))
}
