//! The delivery engine: a dispatcher claims due notifications from the
//! outbox and feeds a bounded channel; sender threads make one HTTP attempt
//! each and hand the outcome to the writer for recording.

pub mod destination;
mod dispatcher;
pub mod policy;
mod pool;
mod recorder;
mod sender;
pub mod signing;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, info, warn};

use crate::config::Config;
use crate::store::{Claimed, Store};
use destination::Guard;
use policy::RetryPolicy;

/// Claimed notifications a host may hold, as a multiple of its cap on
/// attempts in flight: the rest of its queue stays in the database. Each
/// host gets an equal share of `HELD_TARGET`, but never less than the
/// minimum or more than the maximum multiple.
const HOST_QUEUE_FACTOR_MIN: usize = 16;
const HOST_QUEUE_FACTOR_MAX: usize = 64;
// NOTE: beyond HELD_TARGET / (16 × cap) hosts with a backlog, the total
// held grows with the number of such hosts (16 × cap each).
const HELD_TARGET: usize = 4096;

/// Everything the senders need from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sender threads kept when idle.
    pub senders: usize,
    /// Sender threads at most.
    pub max_senders: usize,
    /// Idle time after which a sender above the minimum exits.
    pub sender_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub max_in_flight_per_host: usize,
    pub paused: bool,
    pub retry: RetryPolicy,
    pub guard: Arc<Guard>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings, crate::config::ConfigError> {
        let delivery = &config.delivery;
        Ok(Settings {
            senders: delivery.senders,
            max_senders: delivery.max_senders,
            sender_idle_timeout: delivery.sender_idle_timeout,
            connect_timeout: delivery.connect_timeout,
            timeout: delivery.timeout,
            max_response_bytes: delivery.max_response_bytes,
            max_in_flight_per_host: delivery.max_in_flight_per_host,
            paused: delivery.paused,
            retry: RetryPolicy {
                max_attempts: delivery.max_attempts,
                waits: delivery.retry_waits.clone(),
                max_retry_after: delivery.max_retry_after,
            },
            guard: Arc::new(Guard::new(config.allowed_networks()?)),
        })
    }
}

/// Wakes the dispatcher when new notifications are due. Cheap to clone.
#[derive(Clone)]
pub struct Waker {
    sender: Sender<()>,
}

impl Waker {
    pub fn wake(&self) {
        // A full channel means a wake-up is already pending.
        let _ = self.sender.try_send(());
    }
}

/// State shared by the dispatcher and the senders.
struct Shared {
    store: Store,
    settings: Settings,
    stopping: AtomicBool,
    waker: Waker,
    /// Claimed notifications that were not sent because of a stop.
    unsent: Mutex<Vec<String>>,
    /// Notifications whose attempt could not be recorded; they stay in
    /// flight in the database until the dispatcher returns them to the
    /// queue.
    orphans: Mutex<Vec<String>>,
    hosts: Mutex<HostSlots>,
    recorder: recorder::Recorder,
    /// 1 while the dispatcher thread runs.
    threads_running: std::sync::atomic::AtomicUsize,
    pool: pool::SenderPool,
}

/// A read-only view of the engine for health checks and metrics. Cheap to
/// clone.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl Monitor {
    /// Returns why delivery is not ready, or None when every thread runs.
    pub fn problem(&self) -> Option<String> {
        let dispatcher = self.shared.threads_running.load(Ordering::SeqCst);
        let senders = self.shared.pool.total();
        if self.shared.stopping.load(Ordering::SeqCst) {
            Some("delivery is stopping".into())
        } else if dispatcher == 0 {
            Some("the dispatcher thread has stopped".into())
        } else if senders < self.shared.settings.senders {
            Some(format!(
                "only {senders} of at least {} sender threads run",
                self.shared.settings.senders
            ))
        } else {
            None
        }
    }

    /// Sender threads alive now.
    pub fn senders(&self) -> usize {
        self.shared.pool.total()
    }

    /// Notifications claimed and not yet recorded: being sent, waiting in
    /// the senders' channel, or held back for a busy host.
    pub fn in_flight(&self) -> usize {
        let hosts = self.shared.hosts();
        hosts.in_flight.values().sum::<usize>()
            + hosts
                .deferred
                .values()
                .map(|queue| queue.len())
                .sum::<usize>()
    }
}

/// Counts a thread as running until it is dropped, also on a panic.
struct RunningThread<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> RunningThread<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> RunningThread<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        RunningThread(counter)
    }
}

impl Drop for RunningThread<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Attempts in flight per target `host:port`, and claimed notifications
/// waiting for their host to drop below the cap.
#[derive(Default)]
struct HostSlots {
    in_flight: HashMap<String, usize>,
    deferred: HashMap<String, VecDeque<Claimed>>,
}

impl Shared {
    fn hosts(&self) -> MutexGuard<'_, HostSlots> {
        self.hosts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn unsent(&self) -> MutexGuard<'_, Vec<String>> {
        self.unsent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn orphans(&self) -> MutexGuard<'_, Vec<String>> {
        self.orphans
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Ends an attempt: hands its host slot to the next notification held
    /// back for the same host and returns it for the caller to send, or
    /// frees the slot. Wakes the dispatcher when the host's held-back queue
    /// runs low, so it claims more before the queue runs dry.
    fn finish_attempt(&self, authority: &str) -> Option<Claimed> {
        let cap = self.settings.max_in_flight_per_host;
        let mut hosts = self.hosts();
        if !self.stopping.load(Ordering::SeqCst) {
            if let Some(queue) = hosts.deferred.get_mut(authority) {
                let next = queue.pop_front();
                let left = queue.len();
                if left == 0 {
                    hosts.deferred.remove(authority);
                }
                drop(hosts);
                if left <= cap * HOST_QUEUE_FACTOR_MIN / 2 {
                    self.waker.wake();
                }
                if next.is_some() {
                    return next;
                }
                hosts = self.hosts();
            }
        }
        let (was_full, now_idle) = match hosts.in_flight.get_mut(authority) {
            Some(count) => {
                let was_full = *count >= cap;
                *count -= 1;
                let now_idle = *count == 0;
                if now_idle {
                    hosts.in_flight.remove(authority);
                }
                (was_full, now_idle)
            }
            None => (false, false),
        };
        let waiting = hosts.deferred.contains_key(authority);
        drop(hosts);
        // A host that was full or has held-back notifications can take
        // the next one now. A host with nothing in flight may have more due
        // in the database. Either way the dispatcher should look.
        if was_full || waiting || now_idle {
            self.waker.wake();
        }
        None
    }
}

/// The running engine.
pub struct Delivery {
    shared: Arc<Shared>,
    dispatcher: JoinHandle<()>,
}

impl Delivery {
    /// Returns notifications left in flight by an earlier run to the queue
    /// and starts the dispatcher and the sender threads.
    pub fn start(store: Store, settings: Settings) -> Result<Delivery, crate::store::StoreError> {
        let requeued = store.requeue_in_flight()?;
        if requeued > 0 {
            info!("requeued {requeued} notifications left in flight by the previous run");
        }

        // NOTE: this also cuts a longer wait that a receiver asked for with
        // Retry-After, down to the longest configured retry wait.
        let longest_wait = settings
            .retry
            .waits
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        let max_wait_ms = longest_wait.mul_f64(1.0 + policy::JITTER).as_millis() as i64;
        let shortened = store.shorten_waits(max_wait_ms)?;
        if shortened > 0 {
            info!("moved {shortened} retries forward to the configured retry waits");
        }

        let (wake_sender, wake_receiver) = crossbeam_channel::bounded(1);
        // Room for every sender to have one job waiting, and for a burst.
        let capacity = (settings.max_senders * 2).max(64);
        let (job_sender, job_receiver) = crossbeam_channel::bounded::<Claimed>(capacity);
        let shared = Arc::new(Shared {
            store,
            settings,
            stopping: AtomicBool::new(false),
            waker: Waker {
                sender: wake_sender,
            },
            unsent: Mutex::new(Vec::new()),
            orphans: Mutex::new(Vec::new()),
            hosts: Mutex::new(HostSlots::default()),
            recorder: recorder::Recorder::default(),
            threads_running: std::sync::atomic::AtomicUsize::new(0),
            pool: pool::SenderPool::new(job_receiver),
        });

        pool::SenderPool::start_minimum(&shared);

        let dispatcher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hookd-dispatcher".into())
                .spawn(move || {
                    let _running = RunningThread::enter(&shared.threads_running);
                    dispatcher::run(&shared, wake_receiver, job_sender)
                })
                .expect("failed to spawn the dispatcher thread")
        };

        info!(
            "delivery started with {} to {} sender threads",
            shared.settings.senders, shared.settings.max_senders
        );
        shared.waker.wake();
        Ok(Delivery { shared, dispatcher })
    }

    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: self.shared.clone(),
        }
    }

    pub fn waker(&self) -> Waker {
        self.shared.waker.clone()
    }

    /// Stops claiming work, lets attempts in flight finish within `grace`,
    /// and returns claimed but unsent notifications to the queue. Attempts
    /// still running after `grace` stay in flight in the database and are
    /// sent again at the next start.
    pub fn stop(self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
        if self.dispatcher.join().is_err() {
            error!("dispatcher thread panicked");
        }

        let deadline = Instant::now() + grace;
        let running = self.shared.pool.wait_for_exit(deadline);
        if running > 0 {
            warn!(
                "{running} delivery attempts still running after the grace period; they will be sent again at the next start"
            );
        }

        let unsent = std::mem::take(&mut *self.shared.unsent());
        if !unsent.is_empty() {
            let count = unsent.len();
            match self.shared.store.release(unsent) {
                Ok(()) => info!("returned {count} unsent notifications to the queue"),
                Err(error) => error!(
                    "cannot return {count} unsent notifications to the queue: {error}; they are requeued at the next start"
                ),
            }
        }
        info!("delivery stopped");
    }
}
