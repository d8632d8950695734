//! Resources (projects, tasks, subtasks, clients, events) and the
//! notifications their changes create in the same transaction.

use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::{Store, StoreError, now_ms};
use crate::events::{Event, Kind};
use crate::store::Caller;

/// A stored resource: its id and the JSON document the API returns.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: String,
    pub kind: Kind,
    pub document: String,
}

/// The result of a create or update: the resource and how many
/// notifications the change queued.
#[derive(Debug)]
pub struct Change {
    pub resource: Resource,
    pub notifications: usize,
    /// The event the change fired, if it fired one.
    pub event: Option<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The document is invalid; the text says which field and why.
    #[error("{0}")]
    Invalid(String),
    #[error("resource not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ResourceError {
    fn from(error: rusqlite::Error) -> Self {
        ResourceError::Store(StoreError::from(error))
    }
}

/// Checks a whole document before it is stored; returns the error sentence.
pub type Validator = Box<dyn FnOnce(&Map<String, Value>) -> Result<(), String> + Send>;

fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

impl Store {
    /// Stores a new resource for the caller and queues a notification for
    /// each of the caller's subscriptions to its kind's creation event.
    pub async fn create_resource(
        &self,
        caller: &Caller,
        kind: Kind,
        mut fields: Map<String, Value>,
        base_url: String,
    ) -> Result<Change, ResourceError> {
        let caller = caller.clone();
        self.writer().write_async(move |connection| {
            if kind == Kind::Subtasks {
                check_task_exists(connection, caller.domain_id, &fields)?;
            }

            let id = crate::secrets::new_id();
            let now = now_ms();
            fields.insert("id".into(), Value::String(id.clone()));
            fields.insert("created_by".into(), Value::String(caller.user_name.clone()));
            fields.insert("created_at".into(), Value::String(rfc3339(now)));
            fields.insert("updated_at".into(), Value::String(rfc3339(now)));
            let completed = fields.get("completed") == Some(&Value::Bool(true));
            let document = Value::Object(fields).to_string();

            connection
                .prepare_cached(
                    "INSERT INTO resources (id, kind, domain_id, user_id, document, completed, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )?
                .execute(params![id, kind.as_str(), caller.domain_id, caller.user_id, document, completed, now])?;

            let resource_url = format!("{base_url}/v2/{kind}/{id}");
            let notifications = queue_notifications(connection, caller.user_id, kind.created_event(), &resource_url, now)?;
            Ok(Change {
                resource: Resource { id, kind, document },
                notifications,
                event: Some(kind.created_event()),
            })
        })
        .await
    }

    /// Lists the documents of one kind that a user created, newest first,
    /// at most `limit` of them. `completed` keeps only completed (true) or
    /// only uncompleted (false) ones. The index `resources_user_kind`
    /// serves the order either way.
    pub fn list_resources(
        &self,
        user_id: i64,
        kind: Kind,
        completed: Option<bool>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let connection = self.reader()?;
        // The rowid puts the later insert first among resources created in
        // the same millisecond. Index entries end with the rowid, so the
        // index still serves this order without a sort.
        let mut statement = connection.prepare_cached(
            "SELECT document FROM resources
             WHERE user_id = ?1 AND kind = ?2 AND (?3 IS NULL OR completed = ?3)
             ORDER BY created_at DESC, rowid DESC
             LIMIT ?4",
        )?;
        let documents = statement
            .query_map(params![user_id, kind.as_str(), completed, limit], |row| {
                row.get(0)
            })?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(documents)
    }

    /// Merges `patch` into a resource of the caller's domain: a field set to
    /// null is removed, any other value replaces the field. A change of
    /// `completed` from not true to true queues the kind's completion event
    /// for the caller's subscriptions, once.
    pub async fn patch_resource(
        &self,
        caller: &Caller,
        kind: Kind,
        id: &str,
        patch: Map<String, Value>,
        validate: Validator,
        base_url: String,
    ) -> Result<Change, ResourceError> {
        let caller = caller.clone();
        let id = id.to_owned();
        self.writer().write_async(move |connection| {
            let stored: Option<(String, bool)> = connection
                .prepare_cached("SELECT document, completed FROM resources WHERE id = ?1 AND kind = ?2 AND domain_id = ?3")?
                .query_row(params![id, kind.as_str(), caller.domain_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((document, was_completed)) = stored else {
                return Err(ResourceError::NotFound);
            };
            let mut fields: Map<String, Value> = serde_json::from_str(&document)
                .map_err(|error| StoreError::from(rusqlite::Error::ToSqlConversionFailure(Box::new(error))))?;

            for (name, value) in patch {
                if value.is_null() {
                    fields.remove(&name);
                } else {
                    fields.insert(name, value);
                }
            }
            validate(&fields).map_err(ResourceError::Invalid)?;
            if kind == Kind::Subtasks {
                check_task_exists(connection, caller.domain_id, &fields)?;
            }

            let now = now_ms();
            fields.insert("updated_at".into(), Value::String(rfc3339(now)));
            let completed = fields.get("completed") == Some(&Value::Bool(true));
            let document = Value::Object(fields).to_string();
            connection
                .prepare_cached("UPDATE resources SET document = ?1, completed = ?2, updated_at = ?3 WHERE id = ?4")?
                .execute(params![document, completed, now, id])?;

            let mut notifications = 0;
            let mut fired = None;
            if completed
                && !was_completed
                && let Some(event) = kind.completed_event()
            {
                let resource_url = format!("{base_url}/v2/{kind}/{id}");
                notifications = queue_notifications(connection, caller.user_id, event, &resource_url, now)?;
                fired = Some(event);
            }
            Ok(Change {
                resource: Resource { id, kind, document },
                notifications,
                event: fired,
            })
        })
        .await
    }
}

/// Checks that a subtask's `task_id` names a task of the same domain.
fn check_task_exists(
    connection: &Connection,
    domain_id: i64,
    fields: &Map<String, Value>,
) -> Result<(), ResourceError> {
    let task_id = fields
        .get("task_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if resource_exists(connection, domain_id, Kind::Tasks, task_id)? {
        Ok(())
    } else {
        Err(ResourceError::Invalid(format!(
            "field `task_id`: task {task_id:?} not found in this domain; create the task first"
        )))
    }
}

fn resource_exists(
    connection: &Connection,
    domain_id: i64,
    kind: Kind,
    id: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = connection
        .prepare_cached("SELECT 1 FROM resources WHERE id = ?1 AND kind = ?2 AND domain_id = ?3")?
        .query_row(params![id, kind.as_str(), domain_id], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// Queues one notification for each of the user's active subscriptions to
/// `event`, due now. One statement covers any fan-out.
///
/// A notification id is the creation time in milliseconds (12 hex digits),
/// the row's place in this fan-out (4 hex digits) and 64 random bits. Ids
/// that rise with time keep the writes of a fan-out together in the
/// indexes keyed by notification id, instead of spreading them over every
/// page.
fn queue_notifications(
    connection: &Connection,
    user_id: i64,
    event: Event,
    resource_url: &str,
    now: i64,
) -> Result<usize, StoreError> {
    let inserted = connection
        .prepare_cached(
            "INSERT INTO notifications (id, subscription_id, event, resource_url, target_authority, state, attempts,
                                        due_at, created_at)
             SELECT printf('%012x%04x', ?2, row_number() OVER () % 65536) || lower(hex(randomblob(8))),
                    id, event, ?1, target_authority, 'pending', 0, ?2, ?2
             FROM subscriptions WHERE user_id = ?3 AND event = ?4 AND removed_at IS NULL",
        )?
        .execute(params![resource_url, now, user_id, event.as_str()])?;
    Ok(inserted)
}

/// Reads a resource of the domain `domain_id` on `connection`.
pub fn get_resource(
    connection: &Connection,
    domain_id: i64,
    kind: Kind,
    id: &str,
) -> Result<Option<Resource>, StoreError> {
    let document: Option<String> = connection
        .prepare_cached(
            "SELECT document FROM resources WHERE id = ?1 AND kind = ?2 AND domain_id = ?3",
        )?
        .query_row(params![id, kind.as_str(), domain_id], |row| row.get(0))
        .optional()?;
    Ok(document.map(|document| Resource {
        id: id.to_owned(),
        kind,
        document,
    }))
}
