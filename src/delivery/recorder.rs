//! Records finished attempts in groups. Senders add outcomes to a shared
//! list, and the first outcome added to an empty list queues one writer job.
//! That job records every outcome in the list when it runs, so under load
//! one job and one savepoint cover many attempts. When idle, each outcome
//! is recorded at once.

use std::sync::{Arc, Mutex, MutexGuard};

use log::error;

use super::Shared;
use crate::metrics::METRICS;
use crate::store::{AttemptResult, RecordedOutcome, StoreError, record_attempt};

/// Outcomes waiting for the writer.
#[derive(Default)]
pub(super) struct Recorder {
    waiting: Mutex<Vec<AttemptResult>>,
}

impl Recorder {
    fn waiting(&self) -> MutexGuard<'_, Vec<AttemptResult>> {
        lock(&self.waiting)
    }
}

/// Adds one outcome, and queues a writer job when none is queued yet.
pub(super) fn record(shared: &Arc<Shared>, result: AttemptResult) {
    let first = {
        let mut waiting = shared.recorder.waiting();
        waiting.push(result);
        waiting.len() == 1
    };
    if !first {
        return;
    }
    // Ids of the notifications in the job's group, kept to return them to
    // the queue if the group cannot be stored. None until the job runs.
    let group_ids: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
    let job_shared = shared.clone();
    let job_group_ids = group_ids.clone();
    let done_shared = shared.clone();
    let submitted = shared.store.writer().submit(
        move |connection| {
            let results = std::mem::take(&mut *job_shared.recorder.waiting());
            *lock(&job_group_ids) = Some(
                results
                    .iter()
                    .map(|result| result.notification_id.clone())
                    .collect(),
            );
            let mut outcomes = Vec::with_capacity(results.len());
            for result in &results {
                // An error rolls the whole group back.
                outcomes.push(record_attempt(connection, result)?);
            }
            Ok((results, outcomes))
        },
        move |recorded| match recorded {
            Ok((results, outcomes)) => finish(&done_shared, &results, outcomes),
            Err(error) => {
                // A job that never ran left its outcomes in the list.
                let ids = lock(&group_ids).take().unwrap_or_else(|| {
                    std::mem::take(&mut *done_shared.recorder.waiting())
                        .into_iter()
                        .map(|result| result.notification_id)
                        .collect()
                });
                orphan(&done_shared, ids, &error);
            }
        },
    );
    if let Err(error) = submitted {
        let waiting = std::mem::take(&mut *shared.recorder.waiting());
        error!(
            "failed to record {} attempts: {error}; their notifications are sent again after a restart",
            waiting.len()
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Acts on a group's recorded outcomes after the commit.
fn finish(shared: &Shared, results: &[AttemptResult], outcomes: Vec<RecordedOutcome>) {
    let mut retry = false;
    for (result, outcome) in results.iter().zip(outcomes) {
        match outcome {
            RecordedOutcome::Retry { .. } => retry = true,
            RecordedOutcome::SubscriptionRemoved { reason } => {
                METRICS
                    .subscriptions_removed
                    .with_label_values(&[reason])
                    .inc();
                error!(
                    "subscription removed hook={} notification={} reason={reason}",
                    result.subscription_id, result.notification_id
                );
            }
            RecordedOutcome::Delivered | RecordedOutcome::AlreadyCancelled => {}
        }
    }
    if retry {
        shared.waker.wake();
    }
}

/// Hands notifications whose attempts could not be recorded to the
/// dispatcher, which returns them to the queue.
fn orphan(shared: &Shared, notification_ids: Vec<String>, error: &StoreError) {
    const SHOWN: usize = 10;
    let shown = notification_ids[..notification_ids.len().min(SHOWN)].join(",");
    let more = notification_ids.len().saturating_sub(SHOWN);
    error!(
        "failed to record {} attempts: {error}; the notifications return to the queue once writes succeed notifications={shown}{}",
        notification_ids.len(),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    shared.orphans().extend(notification_ids);
}
