//! Background pruning of finished notifications, their attempts, and
//! removed subscriptions older than the retention period.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{error, info};

use crate::store::{Store, now_ms};

/// Rows deleted per transaction, small so that no write waits long behind
/// a pruning batch.
const BATCH: usize = 500;

/// Pause between batches, leaving the writer to other work.
const PAUSE: Duration = Duration::from_millis(20);

pub struct Pruner {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Pruner {
    pub fn start(store: Store, retention: Duration, interval: Duration) -> Pruner {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("hookd-prune".into())
            .spawn(move || run(&store, retention, interval, &stopped))
            .expect("failed to spawn the pruning thread");
        Pruner { stop, thread }
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            error!("pruning thread panicked");
        }
    }
}

fn run(store: &Store, retention: Duration, interval: Duration, stopped: &Receiver<()>) {
    while stopped.recv_timeout(interval).is_err() {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let (mut notifications, mut subscriptions) = (0, 0);
        loop {
            match store.prune_batch(cutoff, BATCH) {
                Ok((pruned_notifications, pruned_subscriptions)) => {
                    notifications += pruned_notifications;
                    subscriptions += pruned_subscriptions;
                    if pruned_notifications < BATCH && pruned_subscriptions < BATCH {
                        break;
                    }
                }
                Err(error) => {
                    error!(
                        "pruning failed: {error}; it is tried again in {}",
                        humantime::format_duration(interval)
                    );
                    break;
                }
            }
            if stopped.recv_timeout(PAUSE).is_ok() {
                return;
            }
        }
        if notifications > 0 || subscriptions > 0 {
            info!(
                "pruned notifications={notifications} subscriptions={subscriptions} older than the retention period"
            );
        }
    }
}
