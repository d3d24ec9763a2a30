//! allot-store: persistence in SQLite (rusqlite, bundled, WAL, versioned
//! migrations): groups created or changed through the API, agents with their cgroup paths, every event, the
//! enforcement history with real outcomes, per-minute rollups, and budgets
//! (open reservations and spend per window bucket, one transaction per
//! reserve or settle).
//!
//! It knows nothing of HTTP or the kernel. What it stores has types of its
//! own: enforcement records carry a [`Stage`] and an [`Outcome`], agents an
//! [`AgentStateName`], and quotas and specs are the DTOs of [`dto`], whose
//! JSON shape is the database's and not the core types' serde shape. Event
//! payloads are JSON values made by the caller. Readers (`allot history`,
//! `allot events`) can open the database while a governor writes to it (WAL).
#![forbid(unsafe_code)]

mod agents;
mod budgets;
pub mod dto;
mod enforcement;
mod groups;
mod lock;
mod migrations;
mod names;
mod retention;
pub mod rollup;
mod series;

pub use agents::{AgentStateName, StoredAgent};
pub use budgets::{BudgetLoad, BudgetRecord};
pub use enforcement::{EnforcementRecord, NewEnforcement, Outcome, Stage};
pub use names::UnknownName;
pub use retention::{PruneReport, Retention};

use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A store error, with the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("state database {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The directory or the database file could not be made.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another allot holds the state database open for writing.
    #[error("{} is in use by another allot (pid {})", .path.display(), .pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database was written by a newer allot.
    #[error("state database {path} has schema version {found}, newer than this allot knows ({known}); use a newer allot")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// An agent's stored spec does not have the shape of a [`dto::StoredSpec`].
    #[error("agent {agent}: stored spec: {source}")]
    Spec {
        /// The agent.
        agent: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored budget row does not convert to its core type.
    #[error("state database {path}: {what}: {problem}")]
    Budget {
        /// The database file.
        path: PathBuf,
        /// Which row.
        what: String,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// A stored payload is not valid JSON.
    #[error("state database {path}: corrupt JSON in {what}: {source}")]
    Json {
        /// The database file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// A persisted event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Sequence number.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Topic.
    pub topic: String,
    /// Agent, if any.
    pub agent: Option<String>,
    /// Payload.
    pub data: Value,
}

/// The background checkpoints of one store ([`Store::checkpoint_in_background`]).
#[derive(Debug)]
pub struct Checkpointer {
    shared: std::sync::Arc<CheckpointShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct CheckpointShared {
    stop: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
    error: std::sync::Mutex<Option<String>>,
}

impl Checkpointer {
    /// Why the last checkpoint failed since this was last asked, if one did.
    pub fn take_error(&self) -> Option<String> {
        self.shared.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The exclusive lock of a store opened for writing, held for its life.
    _lock: Option<std::fs::File>,
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Open for writing (creating directories and the file as needed) and
    /// migrate. Takes the exclusive lock `<path>.lock`, held until the store
    /// is dropped: a second writer, in this process or another, gets
    /// [`StoreError::Locked`] naming the file and the holder's pid.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_at_version(path, migrations::CURRENT)
    }

    /// Open for writing and migrate only up to schema `version`: for tests of
    /// migrations from a database an earlier allot wrote.
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, version: i64) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        }
        let lock = lock::acquire(path)?;
        // Every agent's samples and history are in it: readable by its owner only (SQLite
        // gives the -wal and -shm files the database's mode). An empty file is an empty database.
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Dir { path: path.to_path_buf(), source }),
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sql { path: path.to_path_buf(), source })?;
        let mut store = Store { conn, path: path.to_path_buf(), _lock: Some(lock) };
        store.setup(version)?;
        Ok(store)
    }

    /// The permission bits of the database file when users other than its
    /// owner may read it (`None` when only its owner can): it holds every
    /// agent's samples and history, which the API gives an agent only of its own.
    pub fn readable_by_others(&self) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&self.path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }

    /// Whether the state database is free to open for writing: takes its
    /// lock and lets it go at once (`Locked` names the holder), so a caller
    /// can check before it sets up anything else.
    pub fn check_free(path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                return Ok(());
            }
        }
        lock::acquire(path).map(drop)
    }

    /// The lock file beside a state database (`<path>.lock`).
    pub fn lock_path(path: &Path) -> PathBuf {
        lock::lock_path(path)
    }

    /// Open an existing database for reading only (no migration, no creation).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Sql { path: path.to_path_buf(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|source| StoreError::Sql { path: path.to_path_buf(), source })?;
        Ok(Store { conn, path: path.to_path_buf(), _lock: None })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql { path: self.path.clone(), source }
    }

    /// A JSON column's value; `what` names the record for the error.
    fn json<T: DeserializeOwned>(&self, text: &str, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|source| StoreError::Json { path: self.path.clone(), what: what(), source })
    }

    fn setup(&mut self, version: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| StoreError::Sql { path: path.clone(), source };
        self.conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        self.conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;
        self.conn.pragma_update(None, "foreign_keys", "ON").map_err(e)?;
        // The WAL file is cut back to this after a checkpoint (it may grow beyond it in between).
        self.conn.pragma_update(None, "journal_size_limit", 64i64 << 20).map_err(e)?;
        migrations::run(&mut self.conn, &self.path, version)?;
        migrations::incremental_auto_vacuum(&self.conn);
        Ok(())
    }

    /// Checkpoint the write-ahead log on a thread of its own, with a
    /// connection of its own, every `every`, instead of in this connection's
    /// commits: SQLite's automatic checkpoint runs inside the commit that
    /// fills the log past 1000 pages and syncs the database file there (5 to
    /// 25 ms here), so a writer that must answer quickly (the governor)
    /// hands it off. A passive checkpoint never waits for writers or readers.
    /// Stops (after a last checkpoint) when the [`Checkpointer`] is dropped;
    /// this connection's automatic checkpoints stay off (SQLite checkpoints
    /// once more when the last connection closes).
    pub fn checkpoint_in_background(&self, every: std::time::Duration) -> Result<Checkpointer, StoreError> {
        let path = self.path.clone();
        let e = |source| StoreError::Sql { path: path.clone(), source };
        let conn = Connection::open(&self.path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(e)?;
        let shared = std::sync::Arc::new(CheckpointShared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("allot-checkpoint".into())
            .spawn(move || {
                loop {
                    let stop = {
                        let guard = theirs.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *guard {
                            true
                        } else {
                            *theirs.wake.wait_timeout(guard, every).unwrap_or_else(std::sync::PoisonError::into_inner).0
                        }
                    };
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
                        *theirs.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    }
                    if stop {
                        break;
                    }
                }
            })
            .map_err(|source| StoreError::Dir { path: self.path.clone(), source })?;
        let checkpointer = Checkpointer { shared, thread: Some(thread) };
        // Off only once the thread runs (on failure, it stops with the checkpointer).
        self.conn.pragma_update(None, "wal_autocheckpoint", 0i64).map_err(e)?;
        Ok(checkpointer)
    }

    /// The schema version this build migrates to.
    pub const SCHEMA_VERSION: i64 = migrations::CURRENT;

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.sql())
    }

    /// The journal mode (`wal` once opened for writing).
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        self.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(self.sql())
    }

    /// Append an event; returns its sequence number (one more than the last, across restarts).
    pub fn append_event(&self, at_ms: u64, topic: &str, agent: Option<&str>, data: &Value) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO events (at_ms, topic, agent, data) VALUES (?1, ?2, ?3, ?4)",
                params![sql_i(at_ms), topic, agent, data.to_string()],
            )
            .map_err(self.sql())?;
        Ok(ms(self.conn.last_insert_rowid()))
    }

    /// The last sequence number (0 when there is none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get::<_, i64>(0)).map(ms).map_err(self.sql())
    }

    /// Events after `since`, oldest first, at most `limit`.
    pub fn events_since(&self, since: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at_ms, topic, agent, data FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .map_err(self.sql())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![sql_i(since), limit], |r| <(i64, i64, String, Option<String>, String)>::try_from(r))
            .map_err(self.sql())?;
        rows.map(|row| {
            let (seq, at, topic, agent, data) = row.map_err(self.sql())?;
            let data = self.json(&data, || format!("event {seq}"))?;
            Ok(StoredEvent { seq: ms(seq), at_ms: ms(at), topic, agent, data })
        })
        .collect()
    }

    /// Run `f` in one transaction (all or nothing; a savepoint inside a batch).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let outer = self.conn.is_autocommit();
        let (begin, commit, rollback) = if outer {
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        } else {
            ("SAVEPOINT allot_tx", "RELEASE allot_tx", "ROLLBACK TO allot_tx; RELEASE allot_tx")
        };
        self.conn.execute_batch(begin).map_err(self.sql())?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch(commit).map_err(self.sql())?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch(rollback);
                Err(e)
            }
        }
    }

    /// Begin a batch: every write until [`Store::end_batch`] goes into one
    /// transaction (functions that are all or nothing take a savepoint in it),
    /// so a burst of records (thousands of agents stopping) costs one commit.
    /// Readers see none of it until the end. False, and nothing begun, when
    /// a transaction is open already.
    pub fn begin_batch(&self) -> Result<bool, StoreError> {
        if !self.conn.is_autocommit() {
            return Ok(false);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.sql())?;
        Ok(true)
    }

    /// Commit the batch [`Store::begin_batch`] began.
    pub fn end_batch(&self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(self.sql())
    }

    /// Whether a table exists (for tests and checks).
    pub fn has_table(&self, name: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", params![name], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(self.sql())
    }
}
