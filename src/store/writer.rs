//! The single writer thread. SQLite allows one writer at a time, so every
//! write goes through this thread, which commits whatever has queued up in
//! one transaction (group commit) and answers each caller after the commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{error, info};
use rusqlite::Connection;

use super::StoreError;

/// Runs after the transaction holding a job's writes has ended, with the
/// commit's error if the commit failed.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// One write: runs inside a savepoint and returns whether it succeeded and
/// what to do once the commit is known. It gets an error in place of the
/// connection when its transaction could not begin.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Completion) + Send>;

/// Time without writes after which the writer frees its page cache.
const IDLE_BEFORE_SHRINK: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest number of jobs committed in one transaction.
const MAX_BATCH: usize = 2048;

/// Maximum time a transaction of claims and outcomes only stays open for
/// more of them before its commit.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// The kind of a queued job: whether its commit must sync the disk, and when
/// it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The caller acknowledges the write to a client after the commit, so
    /// the commit syncs the disk.
    Synced,
    /// A write whose loss to a power cut only means a notification is sent
    /// again (a claim). It runs at once, and its transaction may commit
    /// without a disk sync.
    Unsynced,
    /// Like `Unsynced`, but it runs just before the commit, so one run
    /// covers everything its caller gathered meanwhile (attempt outcomes).
    UnsyncedAtCommit,
}

enum Message {
    Job(Job, Kind),
    Stop,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    sender: Sender<Message>,
    /// Transactions that failed to begin or commit since start.
    failures: Arc<AtomicU64>,
}

pub struct WriterThread {
    sender: Sender<Message>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer thread on its own connection. With `sync_commits`,
    /// every transaction holding a synced write ends with a disk sync.
    pub fn start(connection: Connection, sync_commits: bool) -> (Writer, WriterThread) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let failures = Arc::new(AtomicU64::new(0));
        let thread_failures = failures.clone();
        let thread = std::thread::Builder::new()
            .name("hookd-writer".into())
            .spawn(move || run(connection, receiver, &thread_failures, sync_commits))
            .expect("failed to spawn the writer thread");
        (
            Writer {
                sender: sender.clone(),
                failures,
            },
            WriterThread { sender, thread },
        )
    }

    /// Transactions that failed to begin or commit since start; a rising
    /// count means the storage is failing (a full disk, say).
    pub fn failed_transactions(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Runs `work` in the next group commit and returns its result once the
    /// transaction holding it has committed. If `work` fails, its writes are
    /// rolled back and the other jobs of the batch still commit.
    pub fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = crossbeam_channel::bounded::<Result<T, E>>(1);
        self.queue_synced(work, move |outcome| {
            // The caller may have stopped waiting, which needs no action.
            let _ = reply.send(outcome);
        })?;
        answer
            .recv()
            .map_err(|_| E::from(StoreError::WriterStopped))?
    }

    /// Like `write`, for async callers: no thread waits for the commit.
    pub async fn write_async<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, E>>();
        self.queue_synced(work, move |outcome| {
            // The caller may have stopped waiting, which needs no action.
            let _ = reply.send(outcome);
        })?;
        answer
            .await
            .map_err(|_| E::from(StoreError::WriterStopped))?
    }

    /// Queues `work` for the next group commit. After the commit, `reply`
    /// gets its result, or the commit's error.
    fn queue_synced<T, E, F, R>(&self, work: F, reply: R) -> Result<(), E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        R: FnOnce(Result<T, E>) + Send + 'static,
    {
        let job: Job = Box::new(move |connection| {
            let result = match connection {
                Ok(connection) => work(connection),
                Err(error) => Err(E::from(error)),
            };
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let outcome = match (result, commit_error) {
                    (Ok(_), Some(error)) => Err(E::from(error.clone())),
                    (result, _) => result,
                };
                reply(outcome);
            });
            (succeeded, completion)
        });
        self.sender
            .send(Message::Job(job, Kind::Synced))
            .map_err(|_| E::from(StoreError::WriterStopped))
    }

    /// Runs `work` in the next group commit and returns its result as soon
    /// as it has run, before the transaction commits. Only for writes whose
    /// loss in a crash or failed commit is harmless: the caller must not
    /// promise anyone that the change is stored.
    pub fn write_before_commit<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = crossbeam_channel::bounded::<Result<T, StoreError>>(1);
        let job: Job = Box::new(move |connection| {
            let result = match connection {
                Ok(connection) => work(connection),
                Err(error) => Err(error),
            };
            let succeeded = result.is_ok();
            let _ = reply.send(result);
            let completion: Completion = Box::new(|commit_error| {
                if let Some(error) = commit_error {
                    error!("a write returned before its commit was lost: {error}");
                }
            });
            (succeeded, completion)
        });
        self.sender
            .send(Message::Job(job, Kind::Unsynced))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.recv().map_err(|_| StoreError::WriterStopped)?
    }

    /// Queues `work` without waiting for it. `work` runs just before the
    /// commit of the transaction it joins. That commit may skip the disk
    /// sync, so `submit` suits only writes whose loss to a power cut is
    /// harmless. `then` runs after the commit with the job's result, or with
    /// the commit's error.
    pub fn submit<T, F, C>(&self, work: F, then: C) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(Result<T, StoreError>) + Send + 'static,
    {
        let job: Job = Box::new(move |connection| {
            let result = match connection {
                Ok(connection) => work(connection),
                Err(error) => Err(error),
            };
            let succeeded = result.is_ok();
            let completion: Completion =
                Box::new(move |commit_error| match (result, commit_error) {
                    (Ok(_), Some(error)) => then(Err(error.clone())),
                    (result, _) => then(result),
                });
            (succeeded, completion)
        });
        self.sender
            .send(Message::Job(job, Kind::UnsyncedAtCommit))
            .map_err(|_| StoreError::WriterStopped)
    }
}

impl WriterThread {
    /// Commits what is queued, then stops the thread. Jobs sent later fail
    /// with `WriterStopped`.
    pub fn stop(self) {
        let _ = self.sender.send(Message::Stop);
        if self.thread.join().is_err() {
            error!("writer thread panicked");
        }
    }
}

fn run(
    connection: Connection,
    receiver: Receiver<Message>,
    failures: &AtomicU64,
    sync_commits: bool,
) {
    let mut stopping = false;
    // Claims that find nothing run every few seconds, so idleness is
    // measured by rows changed, not by jobs received.
    let mut shrunk = true;
    let mut changes = connection.total_changes();
    let mut last_change = Instant::now();
    let mut syncing = sync_commits;
    // A synced job that arrived while an unsynced transaction was open.
    let mut carried: Option<Job> = None;
    while !stopping {
        let (first, first_kind) = match carried.take() {
            Some(job) => (job, Kind::Synced),
            None => {
                let received = receiver.recv_timeout(IDLE_BEFORE_SHRINK);
                if connection.total_changes() != changes {
                    changes = connection.total_changes();
                    last_change = Instant::now();
                    shrunk = false;
                }
                if !shrunk && last_change.elapsed() >= IDLE_BEFORE_SHRINK {
                    // After a busy period, give the page cache back once.
                    if let Err(error) = connection.execute_batch("PRAGMA shrink_memory") {
                        error!("cannot shrink the writer's cache: {error}");
                    }
                    crate::memory::release_free_memory();
                    shrunk = true;
                }
                match received {
                    Ok(Message::Job(job, kind)) => (job, kind),
                    Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                }
            }
        };
        let mut synced = first_kind == Kind::Synced;
        let mut batch = vec![(first, first_kind)];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(Message::Job(job, kind)) => {
                    synced |= kind == Kind::Synced;
                    batch.push((job, kind));
                }
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }

        // A transaction of claims and outcomes only commits without a disk
        // sync. The WAL is written in order, so the next synced commit (or
        // checkpoint) makes it durable too, and a power cut loses at most
        // the unsynced tail, whose notifications are then sent again.
        let sync = sync_commits && synced;
        if sync != syncing {
            // SQLite changes this setting only outside a transaction.
            let level = if sync { "FULL" } else { "NORMAL" };
            match connection.execute_batch(&format!("PRAGMA synchronous = {level}")) {
                Ok(()) => syncing = sync,
                Err(error) => error!(
                    "failed to set synchronous = {level}: {error}; this commit keeps the previous setting"
                ),
            }
        }

        // An unsynced transaction stays open for up to LINGER to take in
        // more claims and outcomes, so one commit covers many of them. A
        // claim still runs, and returns, as soon as it arrives. A synced job
        // ends the wait and goes into the next transaction.
        let deadline = Instant::now() + LINGER;
        let more = || {
            if synced || stopping || carried.is_some() {
                return None;
            }
            match receiver.recv_deadline(deadline) {
                Ok(Message::Job(job, Kind::Synced)) => {
                    carried = Some(job);
                    None
                }
                Ok(Message::Job(job, kind)) => Some((job, kind)),
                Ok(Message::Stop) => {
                    stopping = true;
                    None
                }
                Err(_) => None,
            }
        };
        if !commit_batch(&connection, batch, more) {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    }
    info!("writer stopped");
}

/// Runs and commits one batch, with any jobs that `more` adds before the
/// commit. Returns false when the transaction could not begin or commit.
fn commit_batch(
    connection: &Connection,
    batch: Vec<(Job, Kind)>,
    mut more: impl FnMut() -> Option<(Job, Kind)>,
) -> bool {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = StoreError::from(error);
        error!(
            "cannot begin a write transaction for {} writes: {error}",
            batch.len()
        );
        for (job, _) in batch {
            let (_, completion) = job(Err(error.clone()));
            completion(None);
        }
        return false;
    }

    let mut completions = Vec::with_capacity(batch.len());
    let mut at_commit = Vec::new();
    let mut run = |job: Job, kind: Kind| {
        if kind == Kind::UnsyncedAtCommit {
            at_commit.push(job);
        } else {
            completions.push(run_in_savepoint(connection, job));
        }
    };
    let mut count = batch.len();
    for (job, kind) in batch {
        run(job, kind);
    }
    while count < MAX_BATCH {
        match more() {
            Some((job, kind)) => {
                count += 1;
                run(job, kind);
            }
            None => break,
        }
    }
    for job in at_commit {
        completions.push(run_in_savepoint(connection, job));
    }

    let commit_error = connection
        .execute_batch("COMMIT")
        .err()
        .map(StoreError::from);
    if let Some(error) = &commit_error {
        error!("commit of {} writes failed: {error}", completions.len());
        let _ = connection.execute_batch("ROLLBACK");
    }
    let committed = commit_error.is_none();
    for completion in completions {
        completion(commit_error.as_ref());
    }
    committed
}

/// Runs a statement without parameters from the statement cache, which
/// saves parsing it for every job.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_in_savepoint(connection: &Connection, job: Job) -> Completion {
    if let Err(error) = run_cached(connection, "SAVEPOINT job") {
        let (_, completion) = job(Err(StoreError::from(error)));
        return completion;
    }
    let (succeeded, completion) = job(Ok(connection));
    let ended = if succeeded {
        run_cached(connection, "RELEASE job")
    } else {
        run_cached(connection, "ROLLBACK TO job")
            .and_then(|()| run_cached(connection, "RELEASE job"))
    };
    if let Err(error) = ended {
        error!("cannot end a savepoint: {error}");
    }
    completion
}
