//! The dispatcher thread: claims due notifications in batches and feeds the
//! senders' channel, holding back targets that are at their cap of attempts
//! in flight. New notifications wake it at once; otherwise it sleeps until
//! the next due time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use log::{error, warn};

use std::sync::Arc;

use super::pool::SenderPool;
use super::{HELD_TARGET, HOST_QUEUE_FACTOR_MAX, HOST_QUEUE_FACTOR_MIN, Shared};
use crate::store::{Claimed, now_ms};

/// Most notifications claimed in one transaction.
const CLAIM_BATCH: usize = 256;

/// Maximum sleep without a wake-up, a safety net for clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Maximum wait while due work is held back only by host caps.
const SATURATED_PAUSE: Duration = Duration::from_millis(10);

/// Sleep after a database error before claiming again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Arc<Shared>, wake: Receiver<()>, jobs: Sender<Claimed>) {
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
    let mut cursor = String::new();
    let mut failed_transactions = shared.store.writer().failed_transactions();
    while !shared.stopping.load(Ordering::SeqCst) {
        // A claim is handed over before its commit. While commits fail (a
        // full disk, say), the claimed notifications stay pending and would
        // be claimed and sent again at once, so claims pause instead.
        let failed_now = shared.store.writer().failed_transactions();
        if failed_now != failed_transactions {
            failed_transactions = failed_now;
            warn!(
                "database writes are failing; claims pause for {}",
                humantime::format_duration(ERROR_PAUSE)
            );
            let _ = wake.recv_timeout(ERROR_PAUSE);
            continue;
        }
        return_orphans(shared);

        let ready = take_deferred_with_room(shared);
        hand_over(shared, &jobs, ready);

        let quota = host_quotas(shared);
        let constrained = quota.is_constrained();
        let claimed = match shared
            .store
            .claim_due(batch_size, cursor.clone(), move |host| quota.room(host))
        {
            Ok((claimed, last_host)) => {
                cursor = last_host;
                claimed
            }
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
                // with full queues. An ending attempt wakes this thread; the
                // short pause bounds the wait for work due meanwhile.
                if !constrained {
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

/// How many more notifications each host may have claimed: attempts in
/// flight plus those held back, up to `host_limit`.
struct HostQuotas {
    limit: usize,
    held: HashMap<String, usize>,
}

impl HostQuotas {
    fn room(&self, host: &str) -> usize {
        self.limit
            .saturating_sub(self.held.get(host).copied().unwrap_or(0))
    }

    /// True when some host already has claimed notifications.
    fn is_constrained(&self) -> bool {
        !self.held.is_empty()
    }
}

fn host_quotas(shared: &Shared) -> HostQuotas {
    let hosts = shared.hosts();
    let mut held: HashMap<String, usize> = hosts.in_flight.clone();
    for (host, queue) in &hosts.deferred {
        *held.entry(host.clone()).or_insert(0) += queue.len();
    }
    HostQuotas {
        limit: host_limit(shared.settings.max_in_flight_per_host, held.len()),
        held,
    }
}

/// Returns how many claimed notifications each host may hold while
/// `hosts` hosts hold some: an equal share of `HELD_TARGET`, kept between
/// the minimum and maximum multiples of the per-host cap.
fn host_limit(cap: usize, hosts: usize) -> usize {
    (HELD_TARGET / hosts.max(1)).clamp(cap * HOST_QUEUE_FACTOR_MIN, cap * HOST_QUEUE_FACTOR_MAX)
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
fn hand_over(shared: &Arc<Shared>, jobs: &Sender<Claimed>, ready: Vec<Claimed>) {
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
                Ok(()) => {
                    SenderPool::grow(shared);
                    break;
                }
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

/// Returns notifications whose attempt could not be recorded to the queue,
/// keeping them for the next loop when that write fails too.
fn return_orphans(shared: &Shared) {
    let orphans = std::mem::take(&mut *shared.orphans());
    if orphans.is_empty() {
        return;
    }
    let count = orphans.len();
    if let Err(error) = shared.store.release(orphans.clone()) {
        error!("cannot return {count} notifications to the queue: {error}; trying again");
        shared.orphans().extend(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::host_limit;

    #[test]
    fn host_limit_shares_target_within_bounds() {
        // One busy host gets the largest room, many share the target, and
        // each keeps the smallest room however many there are.
        assert_eq!(host_limit(8, 1), 512);
        assert_eq!(host_limit(8, 16), 256);
        assert_eq!(host_limit(8, 1000), 128);
        assert_eq!(host_limit(8, 0), 512);
    }
}
