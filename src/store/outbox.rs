//! The outbox: claiming due notifications for delivery and recording what
//! each attempt did.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError, now_ms};

/// A notification claimed for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub notification_id: String,
    pub subscription_id: String,
    pub event: String,
    pub target_url: String,
    pub resource_url: String,
    /// The target's `host:port`.
    pub authority: String,
    /// Signing secrets in force: the current one, then the previous one
    /// while its rotation overlap lasts.
    pub secrets: Vec<String>,
    /// For a redelivery, the notification it repeats.
    pub redelivery_of: Option<String>,
    /// This attempt's number, starting at 1.
    pub attempt: u32,
}

/// The next step for a notification after an attempt, decided by the
/// delivery policy.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Delivered,
    /// Remove the subscription for `reason` (`receiver_gone` or
    /// `attempts_exhausted`); the notification ends as failed.
    RemoveSubscription {
        reason: &'static str,
    },
    /// Try again at this time (milliseconds since the epoch, UTC).
    RetryAt(i64),
}

/// One finished attempt, as the recorder stores it.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub notification_id: String,
    pub subscription_id: String,
    pub attempt: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: &'static str,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response_prefix: Option<String>,
    pub response_truncated: bool,
    pub next: NextStep,
}

/// Queue figures for metrics.
#[derive(Debug, Clone, Copy)]
pub struct QueueStats {
    pub waiting: i64,
    pub active_subscriptions: i64,
    pub oldest_due_at: Option<i64>,
}

/// The change that recording an attempt made.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedOutcome {
    Delivered,
    SubscriptionRemoved {
        reason: &'static str,
    },
    Retry {
        due_at: i64,
    },
    /// The subscription was removed while the attempt ran; nothing was
    /// rescheduled.
    AlreadyCancelled,
}

impl Store {
    /// Marks due notifications in flight and returns them: for each target
    /// `host:port`, at most `quota(host)` of its oldest due ones, and at most
    /// `limit` in all. Hosts are visited in name order starting after
    /// `start_after`, so successive claims take turns among hosts. Returns
    /// the last host visited too.
    pub fn claim_due(
        &self,
        limit: usize,
        start_after: String,
        quota: impl Fn(&str) -> usize + Send + 'static,
    ) -> Result<(Vec<Claimed>, String), StoreError> {
        // The claim is returned before its commit: if the commit is lost,
        // the notifications stay pending and are sent again later, which
        // at-least-once delivery allows. Waiting for the commit would add a
        // disk sync to every claim.
        self.writer().write_before_commit(move |connection| {
            let now = now_ms();
            let mut claimed: Vec<Claimed> = Vec::new();
            let mut cursor = start_after.clone();
            let mut wrapped = false;
            let mut last_visited = start_after.clone();
            let mut rowids: Vec<i64> = Vec::new();

            // A loose index scan: one index seek per host with pending
            // notifications, so a host with a large backlog costs no more to
            // pass over than one with a single notification.
            // NOTE: each claim still visits every host that has pending
            // notifications, due or not. With thousands of such hosts, a
            // claim costs thousands of index seeks.
            let mut next_host = connection.prepare_cached(
                "SELECT target_authority FROM notifications
                 WHERE state = 'pending' AND target_authority > ?1
                 ORDER BY target_authority LIMIT 1",
            )?;
            // Rows are taken from the ordered scan until the host's room is
            // full. A `LIMIT ?` would cost more: SQLite prepares a statement
            // again whenever a new value is bound to its LIMIT parameter.
            let mut due_for_host = connection.prepare_cached(
                "SELECT n.id, n.subscription_id, n.event, s.target_url, n.resource_url, n.attempts, s.secret,
                        CASE WHEN s.previous_secret_expires_at > ?2 THEN s.previous_secret END, n.redelivery_of,
                        n.rowid
                 FROM notifications n JOIN subscriptions s ON s.id = n.subscription_id
                 WHERE n.state = 'pending' AND n.target_authority = ?1 AND n.due_at <= ?2
                 ORDER BY n.due_at",
            )?;
            while claimed.len() < limit {
                let host: Option<String> = next_host
                    .query_row(params![cursor], |row| row.get(0))
                    .optional()?;
                let host = match host {
                    Some(host) => host,
                    None if !wrapped && !start_after.is_empty() => {
                        wrapped = true;
                        cursor = String::new();
                        continue;
                    }
                    None => break,
                };
                if wrapped && host > start_after {
                    break;
                }
                cursor = host.clone();
                last_visited = host.clone();

                let room = quota(&host).min(limit - claimed.len());
                if room == 0 {
                    continue;
                }
                let rows = due_for_host.query_map(params![host, now], |row| {
                    let claimed = Claimed {
                        notification_id: row.get(0)?,
                        subscription_id: row.get(1)?,
                        event: row.get(2)?,
                        target_url: row.get(3)?,
                        resource_url: row.get(4)?,
                        attempt: row.get::<_, u32>(5)? + 1,
                        authority: host.clone(),
                        secrets: [row.get::<_, Option<String>>(6)?, row.get::<_, Option<String>>(7)?]
                            .into_iter()
                            .flatten()
                            .collect(),
                        redelivery_of: row.get(8)?,
                    };
                    Ok((claimed, row.get::<_, i64>(9)?))
                })?;
                for row in rows.take(room) {
                    let (notification, rowid) = row?;
                    claimed.push(notification);
                    rowids.push(rowid);
                }
            }

            // By rowid, which saves a seek in the index of ids per row.
            let mut mark = connection
                .prepare_cached("UPDATE notifications SET state = 'in_flight' WHERE rowid = ?1")?;
            for rowid in rowids {
                mark.execute(params![rowid])?;
            }
            Ok((claimed, last_visited))
        })
    }

    /// Returns the earliest due time of a pending notification, if any.
    pub fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let connection = self.reader()?;
        let due: Option<i64> = connection
            .prepare_cached("SELECT min(due_at) FROM notifications WHERE state = 'pending'")?
            .query_row([], |row| row.get(0))?;
        Ok(due)
    }

    /// Returns notifications left in flight (by a crash or a stop before
    /// they were sent) to the queue, due at once. Returns how many.
    pub fn requeue_in_flight(&self) -> Result<usize, StoreError> {
        self.writer().write(|connection| {
            Ok(connection.execute(
                "UPDATE notifications SET state = 'pending' WHERE state = 'in_flight'",
                [],
            )?)
        })
    }

    /// Moves retries that wait longer than `max_wait_ms` after their last
    /// attempt forward to that limit, so a restart with shorter retry waits
    /// applies them to the queue too. Returns how many moved.
    pub fn shorten_waits(&self, max_wait_ms: i64) -> Result<usize, StoreError> {
        self.writer().write(move |connection| {
            Ok(connection.execute(
                "UPDATE notifications SET due_at = last_attempt_at + ?1
                 WHERE state = 'pending' AND last_attempt_at IS NOT NULL AND due_at > last_attempt_at + ?1",
                params![max_wait_ms],
            )?)
        })
    }

    /// Returns claimed notifications that were never sent to the queue.
    pub fn release(&self, notification_ids: Vec<String>) -> Result<(), StoreError> {
        self.writer().write(move |connection| {
            let mut release = connection.prepare_cached(
                "UPDATE notifications SET state = 'pending' WHERE id = ?1 AND state = 'in_flight'",
            )?;
            for id in &notification_ids {
                release.execute(params![id])?;
            }
            Ok(())
        })
    }

    /// Figures for metrics: notifications waiting, active subscriptions, and
    /// the due time of the oldest waiting notification that is already due.
    pub fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let connection = self.reader()?;
        let waiting: i64 = connection
            .prepare_cached("SELECT count(*) FROM notifications WHERE state = 'pending'")?
            .query_row([], |row| row.get(0))?;
        let active_subscriptions: i64 = connection
            .prepare_cached("SELECT count(*) FROM subscriptions WHERE removed_at IS NULL")?
            .query_row([], |row| row.get(0))?;
        let oldest_due_at: Option<i64> = connection
            .prepare_cached(
                "SELECT min(due_at) FROM notifications WHERE state = 'pending' AND due_at <= ?1",
            )?
            .query_row(params![now_ms()], |row| row.get(0))?;
        Ok(QueueStats {
            waiting,
            active_subscriptions,
            oldest_due_at,
        })
    }

    /// Deletes up to `batch` finished notifications (with their attempts)
    /// that finished before `cutoff`, and up to `batch` subscriptions
    /// removed before `cutoff` that have no notifications left. Returns how
    /// many notifications and subscriptions were deleted.
    pub fn prune_batch(&self, cutoff: i64, batch: usize) -> Result<(usize, usize), StoreError> {
        self.writer().write(move |connection| {
            let batch = batch as i64;
            connection
                .prepare_cached(
                    "DELETE FROM attempts WHERE notification_id IN
                     (SELECT id FROM notifications WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2)",
                )?
                .execute(params![cutoff, batch])?;
            let notifications = connection
                .prepare_cached(
                    "DELETE FROM notifications WHERE id IN
                     (SELECT id FROM notifications WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2)",
                )?
                .execute(params![cutoff, batch])?;
            let subscriptions = connection
                .prepare_cached(
                    "DELETE FROM subscriptions WHERE id IN
                     (SELECT s.id FROM subscriptions s
                      WHERE s.removed_at < ?1
                        AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.subscription_id = s.id)
                      LIMIT ?2)",
                )?
                .execute(params![cutoff, batch])?;
            Ok((notifications, subscriptions))
        })
    }

    /// Checks that the database returns a query result.
    pub fn ping(&self) -> Result<(), StoreError> {
        let connection = self.reader()?;
        connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
        Ok(())
    }

    /// Counts notifications by state, for operators and tests.
    pub fn count_notifications(&self, state: &str) -> Result<i64, StoreError> {
        let connection = self.reader()?;
        Ok(connection.query_row(
            "SELECT count(*) FROM notifications WHERE state = ?1",
            params![state],
            |row| row.get(0),
        )?)
    }
}

/// Stores one attempt and applies its next step, inside the writer's
/// transaction.
pub fn record_attempt(
    connection: &Connection,
    result: &AttemptResult,
) -> Result<RecordedOutcome, StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO attempts (notification_id, number, started_at, duration_ms, outcome, status, error,
                                   response_prefix, response_truncated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            result.notification_id,
            result.attempt,
            result.started_at,
            result.duration_ms,
            result.outcome,
            result.status,
            result.error,
            result.response_prefix,
            result.response_truncated
        ])?;

    // Each update applies only while the notification is in flight: a
    // subscription removed during the attempt has cancelled it already.
    let now = now_ms();
    let updated = match &result.next {
        NextStep::Delivered => connection
            .prepare_cached(
                "UPDATE notifications SET state = 'delivered', finished_at = ?1
                 WHERE id = ?2 AND state = 'in_flight'",
            )?
            .execute(params![now, result.notification_id])?,
        NextStep::RemoveSubscription { .. } => connection
            .prepare_cached(
                "UPDATE notifications SET state = 'failed', attempts = ?1, finished_at = ?2
                 WHERE id = ?3 AND state = 'in_flight'",
            )?
            .execute(params![result.attempt, now, result.notification_id])?,
        NextStep::RetryAt(due_at) => connection
            .prepare_cached(
                "UPDATE notifications SET state = 'pending', attempts = ?1, due_at = ?2, last_attempt_at = ?3
                 WHERE id = ?4 AND state = 'in_flight'",
            )?
            .execute(params![result.attempt, due_at, now, result.notification_id])?,
    };
    if updated == 0 {
        return Ok(RecordedOutcome::AlreadyCancelled);
    }
    Ok(match &result.next {
        NextStep::Delivered => RecordedOutcome::Delivered,
        NextStep::RemoveSubscription { reason } => {
            remove_subscription(connection, &result.subscription_id, reason, now)?;
            RecordedOutcome::SubscriptionRemoved { reason }
        }
        NextStep::RetryAt(due_at) => RecordedOutcome::Retry { due_at: *due_at },
    })
}

/// Marks a subscription removed for `reason` and cancels its notifications
/// that are pending or in flight. Returns false if it was already removed.
pub fn remove_subscription(
    connection: &Connection,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let removed = connection
        .prepare_cached(
            "UPDATE subscriptions SET removed_at = ?1, removed_reason = ?2 WHERE id = ?3 AND removed_at IS NULL",
        )?
        .execute(params![now, reason, id])?;
    connection
        .prepare_cached(
            "UPDATE notifications SET state = 'cancelled', finished_at = ?1
             WHERE subscription_id = ?2 AND state IN ('pending', 'in_flight')",
        )?
        .execute(params![now, id])?;
    Ok(removed > 0)
}
