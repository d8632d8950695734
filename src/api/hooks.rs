//! `/v2/hooks`: subscribe, unsubscribe, list and show subscriptions.

use actix_web::{HttpRequest, HttpResponse, web};
use log::info;
use serde_json::{Value, json};

use super::{AppState, authenticate, json_type, parse_object, read_body, read_short, rfc3339};
use crate::delivery::destination::parse_target;
use crate::error::ApiError;
use crate::events::Event;
use crate::metrics::METRICS;
use crate::store::{self, AttemptRecord, NewSubscription, SubscribeError, Subscription};

const SUBSCRIBE_EXAMPLE: &str =
    r#"{"target_url": "https://example.com/hooks", "event": "new_task"}"#;

/// Recent attempts shown with one subscription.
const ATTEMPTS_SHOWN: u32 = 20;

fn subscription_json(subscription: &Subscription) -> Value {
    let mut body = json!({
        "id": subscription.id,
        "event": subscription.event,
        "target_url": subscription.target_url,
        "created_at": rfc3339(subscription.created_at),
        "active": subscription.removed_at.is_none(),
        "removed_at": subscription.removed_at.map(rfc3339),
        "removed_reason": subscription.removed_reason,
    });
    if let Some(secret) = &subscription.secret {
        body["secret"] = Value::String(secret.clone());
    }
    body
}

pub(super) fn attempt_json(attempt: &AttemptRecord) -> Value {
    json!({
        "notification_id": attempt.notification_id,
        "attempt": attempt.number,
        "started_at": rfc3339(attempt.started_at),
        "duration_ms": attempt.duration_ms,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error": attempt.error,
        "response": attempt.response_prefix,
        "response_truncated": attempt.response_truncated,
    })
}

/// Reads a required string field of the subscribe body.
fn string_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, ApiError> {
    match body.get(name) {
        None => Err(ApiError::BadRequest(format!(
            "missing field `{name}`; send a JSON object like {SUBSCRIBE_EXAMPLE}"
        ))),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(ApiError::BadRequest(format!(
            "field `{name}` must be a string, not a {}",
            json_type(other)
        ))),
    }
}

pub async fn subscribe(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let body = parse_object(&body, SUBSCRIBE_EXAMPLE)?;

    let target_url = string_field(&body, "target_url")?;
    let event_name = string_field(&body, "event")?;
    let event = Event::parse(event_name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown event {event_name:?}; use one of {}",
            Event::names()
        ))
    })?;
    let target = parse_target(target_url, state.max_target_url_length, &state.guard)
        .map_err(ApiError::BadRequest)?;

    let new = NewSubscription {
        user_id: caller.user_id,
        event: event.as_str().to_owned(),
        target_url: target_url.to_owned(),
        target_authority: target.authority,
        target_key: target.key,
        max_per_user: state.max_subscriptions_per_user,
    };
    let created = state.store.create_subscription(new).await;
    let subscription = match created {
        Ok(subscription) => subscription,
        Err(SubscribeError::TargetTaken) => {
            return Err(ApiError::Conflict(format!(
                "an active subscription already uses the target URL {target_url:?}; delete it first or use another URL"
            )));
        }
        Err(SubscribeError::LimitReached(limit)) => {
            return Err(ApiError::Forbidden(format!(
                "you already have {limit} active subscriptions, the maximum; delete one before adding another"
            )));
        }
        Err(SubscribeError::Store(error)) => return Err(error.into()),
    };

    info!(
        "subscription created hook={} domain={} user={} event={} host={}",
        subscription.id,
        caller.domain_name,
        caller.user_name,
        subscription.event,
        target.url.host_str().unwrap_or_default()
    );
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v2/hooks/{}", subscription.id)))
        .json(subscription_json(&subscription)))
}

pub async fn unsubscribe(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let id = path.into_inner();
    let store = state.store.clone();
    let user_id = caller.user_id;
    let lookup = id.clone();
    let removed = web::block(move || store.delete_subscription(user_id, &lookup)).await??;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "no active subscription with id {id:?}"
        )));
    }
    METRICS
        .subscriptions_removed
        .with_label_values(&["deleted"])
        .inc();
    info!(
        "subscription removed hook={id} domain={} user={} reason=deleted",
        caller.domain_name, caller.user_name
    );
    Ok(HttpResponse::Ok().json(json!({ "id": id, "removed": true })))
}

pub async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let user_id = caller.user_id;
    let subscriptions = read_short(&state, move |connection| {
        store::list_subscriptions(connection, user_id)
    })
    .await?;
    let hooks: Vec<Value> = subscriptions.iter().map(subscription_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "hooks": hooks })))
}

pub async fn show(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&request, &state).await?;
    let id = path.into_inner();
    let store = state.store.clone();
    let lookup = id.clone();
    let found = web::block(move || store.get_subscription(caller.user_id, &lookup, ATTEMPTS_SHOWN))
        .await??;
    let Some((subscription, attempts)) = found else {
        return Err(ApiError::NotFound(format!(
            "no subscription with id {id:?}"
        )));
    };
    let mut body = subscription_json(&subscription);
    body["recent_attempts"] = Value::Array(attempts.iter().map(attempt_json).collect());
    Ok(HttpResponse::Ok().json(body))
}
