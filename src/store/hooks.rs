//! Subscriptions (hooks): create, list, show and remove.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Store, StoreError, now_ms, outbox};

pub struct NewSubscription {
    pub user_id: i64,
    pub event: String,
    pub target_url: String,
    pub target_key: String,
    pub target_authority: String,
    pub max_per_user: u32,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub event: String,
    pub target_url: String,
    pub created_at: i64,
    pub removed_at: Option<i64>,
    pub removed_reason: Option<String>,
    /// The signing secret, set only on the subscription just created: it
    /// is shown once.
    pub secret: Option<String>,
}

/// One delivery attempt as stored.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub notification_id: String,
    pub number: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub response_prefix: Option<String>,
    pub response_truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("an active subscription already uses this target URL")]
    TargetTaken,
    #[error("the user already has {0} active subscriptions, the configured maximum")]
    LimitReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for SubscribeError {
    fn from(error: rusqlite::Error) -> Self {
        SubscribeError::Store(StoreError::from(error))
    }
}

const SUBSCRIPTION_COLUMNS: &str = "id, event, target_url, created_at, removed_at, removed_reason";

fn subscription_from_row(row: &Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: row.get(0)?,
        event: row.get(1)?,
        target_url: row.get(2)?,
        created_at: row.get(3)?,
        removed_at: row.get(4)?,
        removed_reason: row.get(5)?,
        secret: None,
    })
}

impl Store {
    /// Creates a subscription. The unique index on active target keys makes
    /// the second of two racing identical requests fail with `TargetTaken`.
    pub async fn create_subscription(
        &self,
        new: NewSubscription,
    ) -> Result<Subscription, SubscribeError> {
        self.writer().write_async(move |connection| {
            let active: i64 = connection
                .prepare_cached("SELECT active_subscriptions FROM users WHERE id = ?1")?
                .query_row(params![new.user_id], |row| row.get(0))?;
            if active >= i64::from(new.max_per_user) {
                return Err(SubscribeError::LimitReached(new.max_per_user));
            }

            let subscription = Subscription {
                id: crate::secrets::new_id(),
                event: new.event,
                target_url: new.target_url,
                created_at: now_ms(),
                removed_at: None,
                removed_reason: None,
                secret: Some(crate::delivery::signing::new_secret()),
            };
            let inserted = connection
                .prepare_cached(
                    "INSERT INTO subscriptions (id, user_id, event, target_url, target_key, target_authority, secret,
                                                created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    subscription.id,
                    new.user_id,
                    subscription.event,
                    subscription.target_url,
                    new.target_key,
                    new.target_authority,
                    subscription.secret,
                    subscription.created_at
                ]);
            match inserted {
                Ok(_) => Ok(subscription),
                Err(error) => {
                    let error = StoreError::from(error);
                    if error.is_unique_violation() {
                        Err(SubscribeError::TargetTaken)
                    } else {
                        Err(SubscribeError::Store(error))
                    }
                }
            }
        })
        .await
    }

    /// Removes the user's active subscription `id` and cancels its pending
    /// notifications. Returns false when there is no such subscription.
    pub fn delete_subscription(&self, user_id: i64, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer().write(move |connection| {
            let owned: Option<String> = connection
                .prepare_cached("SELECT id FROM subscriptions WHERE id = ?1 AND user_id = ?2 AND removed_at IS NULL")?
                .query_row(params![id, user_id], |row| row.get(0))
                .optional()?;
            if owned.is_none() {
                return Ok(false);
            }
            outbox::remove_subscription(connection, &id, "deleted", now_ms())?;
            Ok(true)
        })
    }

    /// Lists every subscription, active or removed, for operators.
    pub fn list_all_subscriptions(
        &self,
        include_removed: bool,
    ) -> Result<Vec<(String, String, Subscription)>, StoreError> {
        let connection = self.reader()?;
        let mut statement = connection.prepare(
            "SELECT s.id, s.event, s.target_url, s.created_at, s.removed_at, s.removed_reason, d.name, u.name
             FROM subscriptions s JOIN users u ON u.id = s.user_id JOIN domains d ON d.id = u.domain_id
             WHERE ?1 OR s.removed_at IS NULL ORDER BY s.created_at, s.rowid",
        )?;
        let rows = statement.query_map(params![include_removed], |row| {
            Ok((row.get(6)?, row.get(7)?, subscription_from_row(row)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One of the user's subscriptions, active or removed, with its most
    /// recent delivery attempts (newest first).
    pub fn get_subscription(
        &self,
        user_id: i64,
        id: &str,
        attempt_limit: u32,
    ) -> Result<Option<(Subscription, Vec<AttemptRecord>)>, StoreError> {
        let connection = self.reader()?;
        let subscription = connection
            .prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1 AND user_id = ?2"
            ))?
            .query_row(params![id, user_id], subscription_from_row)
            .optional()?;
        let Some(subscription) = subscription else {
            return Ok(None);
        };

        let mut statement = connection.prepare_cached(
            "SELECT a.notification_id, a.number, a.started_at, a.duration_ms, a.outcome, a.status, a.error,
                    a.response_prefix, a.response_truncated
             FROM attempts a JOIN notifications n ON n.id = a.notification_id
             WHERE n.subscription_id = ?1 ORDER BY a.id DESC LIMIT ?2",
        )?;
        let attempts = statement
            .query_map(params![id, attempt_limit], attempt_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(Some((subscription, attempts)))
    }

    /// Gives the user's active subscription a new signing secret and keeps
    /// the old one signing for `overlap_ms`. Returns the new secret, or None
    /// when there is no such active subscription.
    pub fn rotate_secret(
        &self,
        user_id: i64,
        id: &str,
        overlap_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.writer().write(move |connection| {
            let secret = crate::delivery::signing::new_secret();
            let now = now_ms();
            let changed = connection
                .prepare_cached(
                    "UPDATE subscriptions
                     SET previous_secret = secret, previous_secret_expires_at = ?1, secret = ?2
                     WHERE id = ?3 AND user_id = ?4 AND removed_at IS NULL",
                )?
                .execute(params![now + overlap_ms, secret, id, user_id])?;
            Ok((changed > 0).then_some(secret))
        })
    }

    /// Reads a page of the notifications of one of the user's subscriptions,
    /// active or removed, newest first, each with its attempts. Returns
    /// None when the user has no such subscription.
    pub fn deliveries(
        &self,
        user_id: i64,
        subscription_id: &str,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<Option<DeliveryPage>, StoreError> {
        let connection = self.reader()?;
        let owned: Option<i64> = connection
            .prepare_cached("SELECT 1 FROM subscriptions WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![subscription_id, user_id], |row| row.get(0))
            .optional()?;
        if owned.is_none() {
            return Ok(None);
        }

        let (before_time, before_id) = match &before {
            Some(cursor) => (cursor.created_at, cursor.id.clone()),
            None => (i64::MAX, String::new()),
        };
        let mut notifications: Vec<NotificationRecord> = connection
            .prepare_cached(
                "SELECT id, event, resource_url, state, attempts, created_at, finished_at, redelivery_of, due_at
                 FROM notifications
                 WHERE subscription_id = ?1
                   AND (created_at < ?2 OR (created_at = ?2 AND id < ?3) OR ?3 = '' AND created_at <= ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?4",
            )?
            .query_map(params![subscription_id, before_time, before_id, limit as i64 + 1], |row| {
                Ok(NotificationRecord {
                    id: row.get(0)?,
                    event: row.get(1)?,
                    resource_url: row.get(2)?,
                    state: row.get(3)?,
                    failed_attempts: row.get(4)?,
                    created_at: row.get(5)?,
                    finished_at: row.get(6)?,
                    redelivery_of: row.get(7)?,
                    due_at: row.get(8)?,
                    attempts: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;

        let next = if notifications.len() > limit {
            notifications.truncate(limit);
            notifications.last().map(|last| Cursor {
                created_at: last.created_at,
                id: last.id.clone(),
            })
        } else {
            None
        };

        let mut attempts = connection.prepare_cached(
            "SELECT notification_id, number, started_at, duration_ms, outcome, status, error, response_prefix,
                    response_truncated
             FROM attempts WHERE notification_id = ?1 ORDER BY number",
        )?;
        for notification in &mut notifications {
            notification.attempts = attempts
                .query_map(params![notification.id], attempt_from_row)?
                .collect::<Result<_, _>>()?;
        }
        Ok(Some(DeliveryPage {
            notifications,
            next,
        }))
    }

    /// Queues a new notification that repeats `notification_id` of the
    /// user's active subscription. Returns the new id, or None when the
    /// subscription is not active or the notification is not its own.
    pub fn redeliver(
        &self,
        user_id: i64,
        subscription_id: &str,
        notification_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let (subscription_id, notification_id) =
            (subscription_id.to_owned(), notification_id.to_owned());
        self.writer().write(move |connection| {
            let now = now_ms();
            let new_id = crate::secrets::time_ordered_id(now, 0);
            let inserted = connection
                .prepare_cached(
                    "INSERT INTO notifications (id, subscription_id, event, resource_url, target_authority, redelivery_of,
                                                state, attempts, due_at, created_at)
                     SELECT ?1, n.subscription_id, n.event, n.resource_url, s.target_authority, n.id, 'pending', 0, ?2, ?2
                     FROM notifications n JOIN subscriptions s ON s.id = n.subscription_id
                     WHERE n.id = ?3 AND s.id = ?4 AND s.user_id = ?5 AND s.removed_at IS NULL",
                )?
                .execute(params![new_id, now, notification_id, subscription_id, user_id])?;
            Ok((inserted > 0).then_some(new_id))
        })
    }

    /// Failed or cancelled notifications of an active subscription created
    /// at or after `since`, for redelivery by an operator.
    pub fn failed_notifications(
        &self,
        subscription_id: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let connection = self.reader()?;
        let mut statement = connection.prepare(
            "SELECT n.id FROM notifications n JOIN subscriptions s ON s.id = n.subscription_id
             WHERE n.subscription_id = ?1 AND n.created_at >= ?2 AND n.state IN ('failed', 'cancelled')
             ORDER BY n.created_at",
        )?;
        let ids = statement
            .query_map(params![subscription_id, since], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Finds the owner of a subscription, as (user id, removed reason).
    pub fn subscription_owner(
        &self,
        subscription_id: &str,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        let connection = self.reader()?;
        Ok(connection
            .query_row(
                "SELECT user_id, removed_reason FROM subscriptions WHERE id = ?1",
                params![subscription_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
    }
}

/// The position after which a page of deliveries continues: the last
/// notification shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    /// Encodes the opaque text form that clients pass back.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (created_at, id) = text.split_once('.')?;
        let valid_id = !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_alphanumeric());
        valid_id.then_some(Cursor {
            created_at: created_at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// One notification with its attempts, oldest attempt first.
#[derive(Debug, Clone)]
pub struct NotificationRecord {
    pub id: String,
    pub event: String,
    pub resource_url: String,
    pub state: String,
    pub failed_attempts: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub redelivery_of: Option<String>,
    pub due_at: i64,
    pub attempts: Vec<AttemptRecord>,
}

pub struct DeliveryPage {
    pub notifications: Vec<NotificationRecord>,
    pub next: Option<Cursor>,
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        notification_id: row.get(0)?,
        number: row.get(1)?,
        started_at: row.get(2)?,
        duration_ms: row.get(3)?,
        outcome: row.get(4)?,
        status: row.get(5)?,
        error: row.get(6)?,
        response_prefix: row.get(7)?,
        response_truncated: row.get(8)?,
    })
}

/// Lists a user's active subscriptions on `connection`, oldest first.
pub fn list_subscriptions(
    connection: &Connection,
    user_id: i64,
) -> Result<Vec<Subscription>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
         WHERE user_id = ?1 AND removed_at IS NULL ORDER BY created_at, rowid"
    ))?;
    let rows = statement.query_map(params![user_id], subscription_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
