//! The dispatcher thread: claims due notifications in batches and feeds the
//! senders' channel. New notifications wake it at once; otherwise it sleeps
//! until the next due time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use log::error;

use super::Shared;
use crate::store::{Claimed, now_ms};

/// Most notifications claimed in one transaction.
const CLAIM_BATCH: usize = 256;

/// Longest sleep without a wake-up, a safety net for clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Sleep after a database error before claiming again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, wake: Receiver<()>, jobs: Sender<Claimed>) {
    let batch_size = CLAIM_BATCH
        .min(jobs.capacity().unwrap_or(CLAIM_BATCH))
        .max(1);
    while !shared.stopping.load(Ordering::SeqCst) {
        let claimed = match shared.store.claim_due(batch_size) {
            Ok(claimed) => claimed,
            Err(error) => {
                error!("cannot claim due notifications: {error}");
                let _ = wake.recv_timeout(ERROR_PAUSE);
                continue;
            }
        };

        if claimed.is_empty() {
            let sleep = match shared.store.next_due_at() {
                Ok(Some(due_at)) => {
                    Duration::from_millis((due_at - now_ms()).clamp(0, i64::MAX) as u64)
                        .min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    error!("cannot read the next due time: {error}");
                    ERROR_PAUSE
                }
            };
            if !sleep.is_zero() {
                let _ = wake.recv_timeout(sleep);
            }
            continue;
        }

        hand_over(shared, &jobs, claimed);
    }
}

/// Sends claimed notifications to the senders, waiting while the channel is
/// full. On a stop, the rest are kept for release back to the queue.
fn hand_over(shared: &Shared, jobs: &Sender<Claimed>, claimed: Vec<Claimed>) {
    let mut pending = claimed.into_iter();
    while let Some(mut notification) = pending.next() {
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                let mut unsent = shared
                    .unsent
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                unsent.push(notification.notification_id);
                unsent.extend(pending.map(|rest| rest.notification_id));
                return;
            }
            match jobs.send_timeout(notification, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(returned)) => notification = returned,
                Err(SendTimeoutError::Disconnected(returned)) => {
                    let mut unsent = shared
                        .unsent
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner());
                    unsent.push(returned.notification_id);
                    unsent.extend(pending.map(|rest| rest.notification_id));
                    return;
                }
            }
        }
    }
}
