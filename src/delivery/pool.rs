//! The sender pool: blocking sender threads that grow while notifications
//! wait and every sender is busy, up to `delivery.max_senders`, and retire
//! after `delivery.sender_idle_timeout` without work, down to
//! `delivery.senders`. Slow receivers need many threads, because each
//! thread makes one attempt at a time; an idle hookd needs few.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, error};

use super::{Shared, sender};
use crate::store::Claimed;

/// Stack of a sender thread: ureq and the attempt need little, and
/// hundreds of threads should cost little address space.
const STACK_BYTES: usize = 256 * 1024;

pub(super) struct SenderPool {
    jobs: Receiver<Claimed>,
    /// Sender threads alive.
    total: AtomicUsize,
    /// Sender threads waiting for a job.
    idle: AtomicUsize,
    next_index: AtomicUsize,
    exited: (Sender<()>, Receiver<()>),
}

impl SenderPool {
    pub(super) fn new(jobs: Receiver<Claimed>) -> SenderPool {
        SenderPool {
            jobs,
            total: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            next_index: AtomicUsize::new(0),
            exited: crossbeam_channel::unbounded(),
        }
    }

    pub(super) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Starts threads until `delivery.senders` are alive.
    pub(super) fn start_minimum(shared: &Arc<Shared>) {
        while shared.pool.total() < shared.settings.senders {
            if !Self::spawn(shared) {
                break;
            }
        }
    }

    /// Adds threads when notifications wait in the channel and no sender is
    /// idle to take them.
    pub(super) fn grow(shared: &Arc<Shared>) {
        let pool = &shared.pool;
        let waiting = pool.jobs.len();
        let idle = pool.idle.load(Ordering::SeqCst);
        let wanted = waiting.saturating_sub(idle);
        for _ in 0..wanted {
            if !Self::spawn(shared) {
                break;
            }
        }
    }

    /// Starts one sender thread unless the pool is at its maximum.
    fn spawn(shared: &Arc<Shared>) -> bool {
        let pool = &shared.pool;
        let maximum = shared.settings.max_senders;
        let reserved = pool
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |total| {
                (total < maximum).then_some(total + 1)
            });
        if reserved.is_err() {
            return false;
        }

        let index = pool.next_index.fetch_add(1, Ordering::SeqCst);
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("hookd-sender-{index}"))
            .stack_size(STACK_BYTES)
            .spawn(move || run(&thread_shared));
        match spawned {
            Ok(_) => true,
            Err(error) => {
                pool.total.fetch_sub(1, Ordering::SeqCst);
                error!("cannot start a sender thread: {error}");
                false
            }
        }
    }

    /// Retires the calling thread if the pool is above its minimum.
    fn try_retire(&self, minimum: usize) -> bool {
        self.total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |total| {
                (total > minimum).then(|| total - 1)
            })
            .is_ok()
    }

    /// Waits until every sender thread has exited or `deadline` passes, and
    /// returns how many are still running.
    pub(super) fn wait_for_exit(&self, deadline: Instant) -> usize {
        while self.total() > 0 {
            if self.exited.1.recv_deadline(deadline).is_err() {
                break;
            }
        }
        self.total()
    }
}

fn run(shared: &Arc<Shared>) {
    let retired = serve(shared);
    let pool = &shared.pool;
    if !retired {
        pool.total.fetch_sub(1, Ordering::SeqCst);
    } else {
        // The thread's agent and buffers are freed by now.
        crate::memory::release_free_memory();
    }
    let _ = pool.exited.0.send(());
}

/// Takes jobs until the channel closes (false) or the thread retires after
/// an idle period (true).
fn serve(shared: &Arc<Shared>) -> bool {
    let pool = &shared.pool;
    let agent = sender::new_agent(&shared.settings);
    let idle_timeout: Duration = shared.settings.sender_idle_timeout;
    let retired = loop {
        pool.idle.fetch_add(1, Ordering::SeqCst);
        let job = pool.jobs.recv_timeout(idle_timeout);
        pool.idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            Ok(claimed) => sender::handle(shared, &agent, claimed),
            Err(RecvTimeoutError::Timeout) => {
                if pool.try_retire(shared.settings.senders) {
                    debug!(
                        "sender thread retired after {} idle",
                        humantime::format_duration(idle_timeout)
                    );
                    break true;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break false,
        }
    };
    drop(agent);
    retired
}
