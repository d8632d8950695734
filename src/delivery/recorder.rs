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
    // The group the job recorded, kept for the step after the commit. None
    // until the job runs.
    let group: Arc<Mutex<Option<Vec<AttemptResult>>>> = Arc::default();
    let job_shared = shared.clone();
    let job_group = group.clone();
    let done_shared = shared.clone();
    let submitted = shared.store.writer().submit(
        move |connection| {
            let gathered = std::mem::take(&mut *job_shared.recorder.waiting());
            let mut slot = lock(&job_group);
            let results = slot.insert(gathered);
            let mut outcomes = Vec::with_capacity(results.len());
            for result in results.iter() {
                // An error rolls the whole group back.
                outcomes.push(record_attempt(connection, result)?);
            }
            Ok(outcomes)
        },
        move |recorded| {
            // A job that never ran left its outcomes in the list.
            let results = lock(&group)
                .take()
                .unwrap_or_else(|| std::mem::take(&mut *done_shared.recorder.waiting()));
            match recorded {
                Ok(outcomes) => finish(&done_shared, &results, outcomes),
                Err(error) => orphan(&done_shared, results, &error),
            }
        },
    );
    if let Err(error) = submitted {
        let waiting = std::mem::take(&mut *shared.recorder.waiting());
        error!(
            "failed to record {} attempts: {error}; their notifications are sent again after a restart notifications={}",
            waiting.len(),
            list_ids(&waiting)
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
fn orphan(shared: &Shared, results: Vec<AttemptResult>, error: &StoreError) {
    error!(
        "failed to record {} attempts: {error}; the notifications return to the queue once writes succeed notifications={}",
        results.len(),
        list_ids(&results)
    );
    shared
        .orphans()
        .extend(results.into_iter().map(|result| result.notification_id));
}

/// Formats the first notification ids of a group for a log line, with a
/// count of the rest.
fn list_ids(results: &[AttemptResult]) -> String {
    const LISTED: usize = 10;
    let mut listed = results
        .iter()
        .take(LISTED)
        .map(|result| result.notification_id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    if results.len() > LISTED {
        listed.push_str(&format!(" and {} more", results.len() - LISTED));
    }
    listed
}
