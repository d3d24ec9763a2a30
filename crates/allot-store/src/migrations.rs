//! Versioned schema migrations, applied in order inside one transaction each;
//! the version lives in `PRAGMA user_version`.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// The migrations; index + 1 is the version each brings the schema to.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    cgroup TEXT NOT NULL,
    spec TEXT NOT NULL,
    exit TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    agent TEXT,
    data TEXT NOT NULL
);
CREATE INDEX events_agent ON events (agent, seq);
CREATE TABLE enforcement (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER,
    at_ms INTEGER NOT NULL,
    agent TEXT NOT NULL,
    resource TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'cancelled', 'fallback')),
    detail TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX enforcement_agent ON enforcement (agent, id);
CREATE TABLE rollups (
    agent TEXT NOT NULL,
    resource TEXT NOT NULL,
    minute INTEGER NOT NULL,
    min INTEGER NOT NULL,
    mean REAL NOT NULL,
    p95 INTEGER NOT NULL,
    max INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (agent, resource, minute)
);
",
    "
CREATE TABLE samples (
    agent TEXT NOT NULL,
    resource TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    value INTEGER NOT NULL
);
CREATE INDEX samples_agent ON samples (agent, resource, at_ms);
CREATE TABLE analyses (
    agent TEXT NOT NULL,
    resource TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    recommendation TEXT,
    PRIMARY KEY (agent, resource)
);
",
    // 3: the stage of an enforcement record is a column of its own; the
    // action column holds the bare action name. Rows of older versions named
    // a scheduled escalation `<action> (scheduled)`: split them.
    "
ALTER TABLE enforcement ADD COLUMN stage TEXT NOT NULL DEFAULT 'done' CHECK (stage IN ('scheduled', 'done'));
UPDATE enforcement
   SET stage = 'scheduled', action = substr(action, 1, length(action) - length(' (scheduled)'))
 WHERE substr(action, -length(' (scheduled)')) = ' (scheduled)';
CREATE INDEX enforcement_escalation ON enforcement (agent, resource, action, id);
",
    // 4: quota groups created or changed through the API (a `StoredGroup` as JSON).
    "
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
",
    // 5: budgets (issue 12). Open reservations and their holds (one row per
    // resource, the levels holding it space-separated), spend per level,
    // window and bucket, the next reservation id (ids are never reused), and
    // budgets declared through the API (a `StoredBudget` as JSON).
    "
CREATE TABLE budget_reservations (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE budget_holds (
    reservation INTEGER NOT NULL REFERENCES budget_reservations (id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    levels TEXT NOT NULL,
    PRIMARY KEY (reservation, resource)
) WITHOUT ROWID;
CREATE TABLE budget_spend (
    level TEXT NOT NULL,
    resource TEXT NOT NULL,
    window TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (level, resource, window, bucket)
) WITHOUT ROWID;
CREATE TABLE budget_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE budgets (
    level TEXT NOT NULL,
    resource TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (level, resource)
);
",
];

/// The schema version this build knows.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Bring the schema up to `target` (at most [`CURRENT`]); a schema newer
/// than this build knows is refused untouched.
pub(crate) fn run(conn: &mut Connection, path: &Path, target: i64) -> Result<(), StoreError> {
    let e = |source| StoreError::Sql { path: path.to_path_buf(), source };
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(e)?;
    if found > CURRENT {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, known: CURRENT });
    }
    let target = usize::try_from(target.min(CURRENT)).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(usize::try_from(found).unwrap_or(0)) {
        let tx = conn.transaction().map_err(e)?;
        tx.execute_batch(sql).map_err(e)?;
        tx.pragma_update(None, "user_version", i as i64 + 1).map_err(e)?;
        tx.commit().map_err(e)?;
    }
    Ok(())
}

/// Switch the database to `auto_vacuum = INCREMENTAL`, so that pages freed by
/// retention can be given back to the file system (`PRAGMA incremental_vacuum`).
///
/// Not a numbered migration: the setting lives in the file's header, not in
/// the schema, and an existing database takes it only through a `VACUUM`,
/// which cannot run inside the migrations' transaction. It is idempotent
/// (keyed on the setting itself) and done once per database. A `VACUUM` that
/// fails (a full disk: it needs room for a copy) leaves the database as it
/// was, in use; freed pages are then reused but the file does not shrink,
/// and the next open tries again. See [`crate::Store::shrinks`].
pub(crate) fn incremental_auto_vacuum(conn: &Connection) {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap_or(INCREMENTAL);
    if mode == INCREMENTAL {
        return;
    }
    if conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").is_ok() {
        let _ = conn.execute_batch("VACUUM");
    }
}
