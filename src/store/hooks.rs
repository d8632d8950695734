//! Subscriptions (hooks): create, list, show and remove.

use rusqlite::{OptionalExtension, Row, params};

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
    })
}

impl Store {
    /// Creates a subscription. The unique index on active target keys makes
    /// the second of two racing identical requests fail with `TargetTaken`.
    pub fn create_subscription(
        &self,
        new: NewSubscription,
    ) -> Result<Subscription, SubscribeError> {
        self.writer().write(move |connection| {
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
            };
            let inserted = connection
                .prepare_cached(
                    "INSERT INTO subscriptions (id, user_id, event, target_url, target_key, target_authority, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    subscription.id,
                    new.user_id,
                    subscription.event,
                    subscription.target_url,
                    new.target_key,
                    new.target_authority,
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

    /// The user's active subscriptions, oldest first.
    pub fn list_subscriptions(&self, user_id: i64) -> Result<Vec<Subscription>, StoreError> {
        let connection = self.reader()?;
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
             WHERE user_id = ?1 AND removed_at IS NULL ORDER BY created_at, rowid"
        ))?;
        let rows = statement.query_map(params![user_id], subscription_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every subscription, active or removed, for operators.
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
            .query_map(params![id, attempt_limit], |row| {
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
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some((subscription, attempts)))
    }
}
