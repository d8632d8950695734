//! Storage: the SQLite file, its schema, and every SQL statement hookd runs.
//! Reads use an r2d2 pool; writes go through the single writer thread.

mod accounts;
mod hooks;
mod outbox;
mod resources;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use log::info;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

pub use accounts::{AccountError, Caller, KeyInfo, Revoked, UserInfo, find_caller};
pub use hooks::{
    AttemptRecord, Cursor, DeliveryPage, NewSubscription, NotificationRecord, SubscribeError,
    Subscription, list_subscriptions,
};
pub use outbox::{AttemptResult, Claimed, NextStep, QueueStats, RecordedOutcome, record_attempt};
pub use resources::{Change, Resource, ResourceError, Validator, get_resource};
pub use writer::Writer;

use crate::config::Synchronous;

/// The schema this binary applies, and the version it records.
const SCHEMA: &str = include_str!("../../schema.sql");
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    #[error("no database connection available: {0}")]
    Pool(Arc<r2d2::Error>),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error(
        "database schema version {found} is newer than this hookd supports ({supported}); run a newer hookd"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("backup failed: {0}")]
    Backup(String),
    #[error("cannot create data directory {path}: {message}")]
    DataDir { path: String, message: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(error))
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> Self {
        StoreError::Pool(Arc::new(error))
    }
}

impl StoreError {
    /// True when the database rejected a write because a unique index
    /// already contains the value.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlite(error) if matches!(
            error.as_ref(),
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        ))
    }

    /// True when the failure is the storage's state rather than the request:
    /// a full disk, a read-only file, a busy database or a stopped writer.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::WriterStopped | StoreError::Pool(_) => true,
            StoreError::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            _ => false,
        }
    }
}

/// The database: a read pool and the writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<SqliteConnectionManager>,
    writer: Writer,
    writer_thread: Arc<Mutex<Option<writer::WriterThread>>>,
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
}

/// Connection hook that returns the memory of a closed read connection,
/// mostly its page cache, to the operating system. Idle read connections
/// close up to a minute after a busy period, later than any other trim.
#[derive(Debug)]
struct TrimOnClose;

impl r2d2::CustomizeConnection<Connection, rusqlite::Error> for TrimOnClose {
    fn on_release(&self, connection: Connection) {
        drop(connection);
        crate::memory::release_free_memory();
    }
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A thread that runs passive WAL checkpoints on its own connection. A
/// passive checkpoint copies only what no reader needs and does not wait
/// for locks, so the writer and readers go on meanwhile.
struct Checkpointer {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(connection: Connection) -> Checkpointer {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("hookd-checkpoint".into())
            .spawn(move || {
                let _ = connection
                    .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()));
                loop {
                    let done = stopped.recv_timeout(CHECKPOINT_INTERVAL).is_ok();
                    let checkpoint: rusqlite::Result<(i64, i64, i64)> =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        });
                    if let Err(error) = checkpoint {
                        log::warn!("WAL checkpoint failed: {error}");
                    }
                    if done {
                        break;
                    }
                }
            })
            .expect("failed to spawn the checkpoint thread");
        Checkpointer { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

const BUSY_TIMEOUT_MS: u32 = 5000;

fn configure(connection: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    let synchronous = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA synchronous = {synchronous};"
    ))
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies the schema
    /// and starts the writer thread.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| StoreError::DataDir {
                path: parent.display().to_string(),
                message: error.to_string(),
            })?;
        }

        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        configure(&connection, synchronous)?;
        migrate(&connection)?;
        // The checkpointer thread copies the WAL into the database, so
        // commits on the writer do not run checkpoints and their disk syncs.
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "cache_size", -8000)?;

        let manager = SqliteConnectionManager::file(path)
            .with_init(move |connection| configure(connection, synchronous));
        // Idle read connections close after a while, and their page caches
        // with them, so an idle server stays small.
        let pool = Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .idle_timeout(Some(std::time::Duration::from_secs(30)))
            .connection_customizer(Box::new(TrimOnClose))
            .build(manager)?;

        let checkpointer = Checkpointer::start(Connection::open(path)?);
        let (writer, writer_thread) = Writer::start(connection, synchronous == Synchronous::Full);
        Ok(Store {
            pool,
            writer,
            writer_thread: Arc::new(Mutex::new(Some(writer_thread))),
            checkpointer: Arc::new(Mutex::new(Some(checkpointer))),
        })
    }

    /// Takes a pooled connection for reads.
    pub fn reader(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }

    /// Returns a read connection if one is free at once, without waiting.
    pub fn try_reader(&self) -> Option<r2d2::PooledConnection<SqliteConnectionManager>> {
        self.pool.try_get()
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Commits queued writes and stops the writer thread. Later writes fail
    /// with `WriterStopped`.
    pub fn close(&self) {
        let thread = self.writer_thread.lock().map(|mut slot| slot.take());
        if let Ok(Some(thread)) = thread {
            thread.stop();
        }
        let checkpointer = self.checkpointer.lock().map(|mut slot| slot.take());
        if let Ok(Some(checkpointer)) = checkpointer {
            checkpointer.stop();
        }
    }

    /// Runs SQLite's integrity check and returns its first line (`ok` when
    /// the file is sound).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let connection = self.reader()?;
        Ok(connection.query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }
}

/// Copies the database at `source` to a new file `destination` with
/// SQLite's online backup API, while other connections keep reading and
/// writing. The copy is written beside `destination` first, checked with
/// `PRAGMA integrity_check`, then renamed into place.
pub fn backup_database(source: &Path, destination: &Path) -> Result<(), StoreError> {
    let io_error = |message: String| StoreError::Backup(message);
    if destination.exists() {
        return Err(io_error(format!(
            "{} already exists; choose a new file name or remove it first",
            destination.display()
        )));
    }
    if !source.exists() {
        return Err(io_error(format!(
            "database {} not found; check `database` or `data_dir`",
            source.display()
        )));
    }
    let partial = destination.with_extension("partial");
    let _ = std::fs::remove_file(&partial);

    let source = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))?;
    let mut copy = Connection::open(&partial)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // Small steps with pauses let the server's writer go on between them.
        backup.run_to_completion(256, std::time::Duration::from_millis(5), None)?;
    }
    let check: String = copy.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    drop(copy);
    if check != "ok" {
        let _ = std::fs::remove_file(&partial);
        return Err(io_error(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    std::fs::rename(&partial, destination).map_err(|error| {
        io_error(format!(
            "cannot move the copy to {}: {error}",
            destination.display()
        ))
    })?;
    Ok(())
}

/// Applies the embedded schema to an empty database and checks the version
/// of an existing one.
fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        connection.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        info!("database schema created at version {SCHEMA_VERSION}");
    }
    // NOTE: later schema versions add their upgrade steps here, each in its
    // own transaction that also raises user_version.
    Ok(())
}
