//! The dispatcher thread: claims due notifications in batches and feeds the
//! senders' channel, holding back targets that are at their cap of attempts
//! in flight. New notifications wake it at once; otherwise it sleeps until
//! the next due time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use log::{error, warn};

use super::Shared;
use crate::store::{Claimed, now_ms};

/// Most notifications claimed in one transaction.
const CLAIM_BATCH: usize = 256;

/// Longest sleep without a wake-up, a safety net for clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Longest wait while due work is held back only by host caps.
const SATURATED_PAUSE: Duration = Duration::from_millis(50);

/// Sleep after a database error before claiming again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, wake: Receiver<()>, jobs: Sender<Claimed>) {
    let batch_size = CLAIM_BATCH
        .min(jobs.capacity().unwrap_or(CLAIM_BATCH))
        .max(1);
    if shared.settings.paused {
        warn!("delivery is paused by delivery.paused; notifications are stored but not sent");
        while !shared.stopping.load(Ordering::SeqCst) {
            let _ = wake.recv_timeout(MAX_SLEEP);
        }
        return;
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        let ready = take_deferred_with_room(shared);
        hand_over(shared, &jobs, ready);

        let claimed = match shared.store.claim_due(batch_size, saturated_hosts(shared)) {
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
                    Duration::from_millis((due_at - now_ms()).max(0) as u64).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    error!("cannot read the next due time: {error}");
                    ERROR_PAUSE
                }
            };
            if sleep.is_zero() {
                // Work became due since the claim, or is due only for hosts
                // at their cap. An ending attempt wakes this thread; the
                // short pause bounds the wait for work due meanwhile.
                if saturated_hosts(shared).is_empty() {
                    continue;
                }
                let _ = wake.recv_timeout(SATURATED_PAUSE);
                continue;
            }
            let _ = wake.recv_timeout(sleep);
            continue;
        }

        let ready = admit(shared, claimed);
        hand_over(shared, &jobs, ready);
    }

    // Notifications held back for busy hosts were claimed but never sent.
    let deferred: Vec<String> = shared
        .hosts()
        .deferred
        .drain()
        .flat_map(|(_, queue)| queue.into_iter().map(|claimed| claimed.notification_id))
        .collect();
    shared.unsent().extend(deferred);
}

/// Hosts at their cap of attempts in flight, or with notifications already
/// waiting for a slot.
fn saturated_hosts(shared: &Shared) -> Vec<String> {
    let cap = shared.settings.max_in_flight_per_host;
    let hosts = shared.hosts();
    let mut saturated: Vec<String> = hosts
        .in_flight
        .iter()
        .filter(|(_, count)| **count >= cap)
        .map(|(authority, _)| authority.clone())
        .collect();
    saturated.extend(hosts.deferred.keys().cloned());
    saturated.sort();
    saturated.dedup();
    saturated
}

/// Takes a slot for each claimed notification whose host has room and
/// holds back the others.
fn admit(shared: &Shared, claimed: Vec<Claimed>) -> Vec<Claimed> {
    let cap = shared.settings.max_in_flight_per_host;
    let mut hosts = shared.hosts();
    let mut ready = Vec::with_capacity(claimed.len());
    for notification in claimed {
        let count = hosts
            .in_flight
            .entry(notification.authority.clone())
            .or_insert(0);
        if *count < cap {
            *count += 1;
            ready.push(notification);
        } else {
            hosts
                .deferred
                .entry(notification.authority.clone())
                .or_default()
                .push_back(notification);
        }
    }
    ready
}

/// Moves held-back notifications whose host has a free slot again.
fn take_deferred_with_room(shared: &Shared) -> Vec<Claimed> {
    let cap = shared.settings.max_in_flight_per_host;
    let mut guard = shared.hosts();
    let hosts = &mut *guard;
    let mut ready = Vec::new();
    hosts.deferred.retain(|authority, queue| {
        let count = hosts.in_flight.entry(authority.clone()).or_insert(0);
        while *count < cap {
            match queue.pop_front() {
                Some(notification) => {
                    *count += 1;
                    ready.push(notification);
                }
                None => break,
            }
        }
        !queue.is_empty()
    });
    hosts.in_flight.retain(|_, count| *count > 0);
    ready
}

/// Sends notifications that hold a host slot to the senders, waiting while
/// the channel is full. On a stop, the rest are kept for release back to
/// the queue.
fn hand_over(shared: &Shared, jobs: &Sender<Claimed>, ready: Vec<Claimed>) {
    let mut pending = ready.into_iter();
    while let Some(mut notification) = pending.next() {
        loop {
            if shared.stopping.load(Ordering::SeqCst) {
                let mut unsent = shared.unsent();
                unsent.push(notification.notification_id);
                unsent.extend(pending.map(|rest| rest.notification_id));
                return;
            }
            match jobs.send_timeout(notification, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(returned)) => notification = returned,
                Err(SendTimeoutError::Disconnected(returned)) => {
                    let mut unsent = shared.unsent();
                    unsent.push(returned.notification_id);
                    unsent.extend(pending.map(|rest| rest.notification_id));
                    return;
                }
            }
        }
    }
}
