//! Retention: how long each table keeps its rows, a cap on the database's
//! size, and [`Store::prune`], which applies both in bounded batches so that
//! one call never holds the governor's loop for long.
//!
//! What is never deleted: the rows of agents that have not exited, the
//! latest analysis of such an agent, and enforcement escalations still open
//! (announced and neither carried out nor cancelled since, see
//! [`Store::open_escalations`]). History tables are pruned oldest first, in
//! insertion order, up to the first row still inside its window; so an
//! escalation's closing record never goes before the record that announced
//! it, and no closed escalation reopens.
//!
//! The size cap counts the pages in use (the file less its free pages).
//! When it is exceeded, the oldest rows of the largest history table
//! (samples, rollups, events, enforcement; estimated from the span of its
//! keys and the size of its oldest rows) go first, a batch a call. Freed
//! pages are given back to the file system (`PRAGMA incremental_vacuum`,
//! the database is kept in `auto_vacuum = INCREMENTAL`) and the WAL is
//! checkpointed without waiting for readers.

use crate::{Store, StoreError, sql_i};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// How long each table keeps its rows, and how large the database may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Raw samples (default 24 h).
    pub samples: Duration,
    /// Per-minute rollups (default 30 days).
    pub rollups: Duration,
    /// Events (default 30 days).
    pub events: Duration,
    /// Enforcement records (default 90 days); open escalations are kept.
    pub enforcement: Duration,
    /// Analyses of agents that exited or are unknown (default 30 days).
    pub analyses: Duration,
    /// Rows of agents that exited this long ago (default 7 days).
    pub exited_agents: Duration,
    /// The most bytes the database may use (default 1 GiB); `None`: no cap.
    pub max_size: Option<u64>,
    /// The most rows one call deletes from each table (default 5,000).
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            samples: 24 * HOUR,
            rollups: 30 * DAY,
            events: 30 * DAY,
            enforcement: 90 * DAY,
            analyses: 30 * DAY,
            exited_agents: 7 * DAY,
            max_size: Some(1 << 30),
            batch: 5_000,
        }
    }
}

/// What one [`Store::prune`] call deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Raw samples deleted.
    pub samples: usize,
    /// Rollups deleted.
    pub rollups: usize,
    /// Events deleted.
    pub events: usize,
    /// Enforcement records deleted.
    pub enforcement: usize,
    /// Analyses deleted.
    pub analyses: usize,
    /// Rows of exited agents deleted.
    pub agents: usize,
    /// Of the rows above, those deleted for the size cap (not their age).
    pub for_size: usize,
    /// Whether more remains to delete (a batch was full, or the size cap is still exceeded): call again soon.
    pub more: bool,
    /// Bytes in use after the call (pages in use times the page size).
    pub size: u64,
    /// Pages given back to the file system.
    pub vacuumed_pages: u64,
}

impl PruneReport {
    /// Rows deleted, every table.
    pub fn total(&self) -> usize {
        self.samples + self.rollups + self.events + self.enforcement + self.analyses + self.agents
    }
}

/// A history table pruned oldest first.
struct History {
    name: &'static str,
    /// Its integer key, ascending in insertion order.
    key: &'static str,
    /// Its time in ms since the Unix epoch.
    time: &'static str,
    /// Rows never deleted (an SQL condition on the table's unaliased columns).
    keep: &'static str,
    /// The approximate bytes of a row (with its index entries).
    row_bytes: &'static str,
}

/// An escalation still open: announced, and no later done row of the same agent, resource and action.
const OPEN_ESCALATION: &str = "enforcement.stage = 'scheduled' AND NOT EXISTS (SELECT 1 FROM enforcement d \
     WHERE d.agent = enforcement.agent AND d.resource = enforcement.resource AND d.action = enforcement.action \
     AND d.stage = 'done' AND d.id > enforcement.id)";

const SAMPLES: History =
    History { name: "samples", key: "rowid", time: "at_ms", keep: "0", row_bytes: "2 * (length(agent) + length(resource) + 16)" };
const ROLLUPS: History =
    History { name: "rollups", key: "rowid", time: "minute * 60000", keep: "0", row_bytes: "2 * (length(agent) + length(resource)) + 64" };
const EVENTS: History = History {
    name: "events",
    key: "seq",
    time: "at_ms",
    keep: "0",
    row_bytes: "length(topic) + 2 * length(COALESCE(agent, '')) + length(data) + 32",
};
const ENFORCEMENT: History = History {
    name: "enforcement",
    key: "id",
    time: "at_ms",
    keep: OPEN_ESCALATION,
    row_bytes: "3 * (length(agent) + length(resource) + length(action)) + length(outcome) + length(detail) + length(decision) + 48",
};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Pages freed at most per call (a bounded amount of writing).
const VACUUM_PAGES: u64 = 4096;

impl Store {
    /// Apply `r` at `now_ms` (ms since the Unix epoch): delete rows older
    /// than their table's window and, while the database is larger than
    /// `r.max_size`, the oldest rows of the largest history table; at most
    /// `r.batch` rows per table. Then give freed pages back to the file
    /// system. [`PruneReport::more`] says whether to call again soon.
    pub fn prune(&mut self, r: &Retention, now_ms: u64) -> Result<PruneReport, StoreError> {
        let batch = i64::try_from(r.batch.max(1)).unwrap_or(i64::MAX);
        let before = |d: Duration| sql_i(now_ms.saturating_sub(ms(d)));
        let mut report = self.transaction(|s| {
            let mut rep = PruneReport {
                samples: s.prune_history(&SAMPLES, before(r.samples), batch)?,
                rollups: s.prune_history(&ROLLUPS, before(r.rollups), batch)?,
                events: s.prune_history(&EVENTS, before(r.events), batch)?,
                enforcement: s.prune_history(&ENFORCEMENT, before(r.enforcement), batch)?,
                ..PruneReport::default()
            };
            rep.analyses = s
                .conn
                .execute(
                    "DELETE FROM analyses WHERE rowid IN (SELECT rowid FROM analyses WHERE at_ms < ?1 \
                     AND agent NOT IN (SELECT id FROM agents WHERE state <> 'exited') ORDER BY at_ms LIMIT ?2)",
                    params![before(r.analyses), batch],
                )
                .map_err(s.sql())?;
            rep.agents = s
                .conn
                .execute(
                    "DELETE FROM agents WHERE id IN (SELECT id FROM agents WHERE state = 'exited' AND updated_ms < ?1 \
                     ORDER BY updated_ms LIMIT ?2)",
                    params![before(r.exited_agents), batch],
                )
                .map_err(s.sql())?;
            let full = |n: usize| i64::try_from(n).unwrap_or(i64::MAX) >= batch;
            rep.more = [rep.samples, rep.rollups, rep.events, rep.enforcement, rep.analyses, rep.agents].into_iter().any(full);
            if let Some(cap) = r.max_size {
                s.prune_for_size(cap, batch, &mut rep)?;
            }
            Ok(rep)
        })?;
        report.vacuumed_pages = self.give_back_pages()?;
        report.size = self.used_bytes()?;
        Ok(report)
    }

    /// Delete the oldest rows of `t` older than `before` (ms), in key order up
    /// to the first row still inside the window; at most `batch`.
    fn prune_history(&self, t: &History, before: i64, batch: i64) -> Result<usize, StoreError> {
        let sql = format!(
            "WITH w AS MATERIALIZED (SELECT {key} AS k, {time} AS t FROM {name} WHERE NOT ({keep}) ORDER BY {key} LIMIT ?2) \
             DELETE FROM {name} WHERE {key} IN (SELECT k FROM w WHERE k < COALESCE((SELECT MIN(k) FROM w WHERE t >= ?1), {max}))",
            key = t.key,
            time = t.time,
            name = t.name,
            keep = t.keep,
            max = i64::MAX,
        );
        self.conn.execute(&sql, params![before, batch]).map_err(self.sql())
    }

    /// While the pages in use exceed `cap`: the oldest rows of the largest
    /// history table, within what is left of its batch.
    fn prune_for_size(&self, cap: u64, batch: i64, rep: &mut PruneReport) -> Result<(), StoreError> {
        let used = self.used_bytes()?;
        if used <= cap {
            return Ok(());
        }
        let mut sizes = Vec::new();
        for t in [&SAMPLES, &ROLLUPS, &EVENTS, &ENFORCEMENT] {
            if let Some(est) = self.estimate(t)? {
                sizes.push((est, t));
            }
        }
        sizes.sort_by_key(|s| std::cmp::Reverse(s.0.0));
        let Some(((_, row_bytes), t)) = sizes.first() else {
            // Nothing left to delete: what remains is kept.
            return Ok(());
        };
        let done = match t.name {
            "samples" => &mut rep.samples,
            "rollups" => &mut rep.rollups,
            "events" => &mut rep.events,
            _ => &mut rep.enforcement,
        };
        let left = batch - i64::try_from(*done).unwrap_or(i64::MAX);
        let want = i64::try_from((used - cap).div_ceil((*row_bytes).max(1))).unwrap_or(i64::MAX);
        let n = want.min(left);
        if n <= 0 {
            rep.more = true;
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {name} WHERE NOT ({keep}) ORDER BY {key} LIMIT ?1)",
            name = t.name,
            key = t.key,
            keep = t.keep,
        );
        let deleted = self.conn.execute(&sql, params![n]).map_err(self.sql())?;
        *done += deleted;
        rep.for_size += deleted;
        rep.more = rep.more || (deleted > 0 && self.used_bytes()? > cap);
        Ok(())
    }

    /// A history table's approximate (bytes, bytes per row) from the span of
    /// its keys and its 64 oldest deletable rows; `None` when it has none.
    fn estimate(&self, t: &History) -> Result<Option<(u64, u64)>, StoreError> {
        let sql = format!(
            "SELECT COUNT(*), AVG(b), (SELECT MAX({key}) - MIN({key}) + 1 FROM {name}) FROM \
             (SELECT {bytes} AS b FROM {name} WHERE NOT ({keep}) ORDER BY {key} LIMIT 64)",
            key = t.key,
            name = t.name,
            bytes = t.row_bytes,
            keep = t.keep,
        );
        let (n, avg, span): (i64, Option<f64>, Option<i64>) =
            self.conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(self.sql())?;
        if n == 0 {
            return Ok(None);
        }
        let row = avg.unwrap_or(1.0).max(1.0) as u64;
        let rows = u64::try_from(span.unwrap_or(0).max(1)).unwrap_or(1);
        Ok(Some((rows.saturating_mul(row), row)))
    }

    /// Bytes in use: the file's pages less its free pages, times the page size.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| self.conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).map_err(self.sql());
        let pages = pragma("page_count")? - pragma("freelist_count")?;
        Ok(u64::try_from(pages.max(0) * pragma("page_size")?).unwrap_or(0))
    }

    /// Whether freed pages can be given back to the file system
    /// (`auto_vacuum = INCREMENTAL`, set when the store is opened for writing).
    pub fn shrinks(&self) -> Result<bool, StoreError> {
        self.conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0)).map(|m| m == 2).map_err(self.sql())
    }

    /// Free pages given back (at most [`VACUUM_PAGES`]), then a checkpoint
    /// that waits for no reader, so the main file shrinks; the pages freed.
    fn give_back_pages(&self) -> Result<u64, StoreError> {
        if !self.shrinks()? {
            return Ok(0);
        }
        let free = |s: &Store| s.conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0)).map_err(s.sql());
        let before = free(self)?;
        if before <= 0 {
            return Ok(0);
        }
        let n = u64::try_from(before).unwrap_or(0).min(VACUUM_PAGES);
        let mut stmt = self.conn.prepare(&format!("PRAGMA incremental_vacuum({n})")).map_err(self.sql())?;
        let mut rows = stmt.query([]).map_err(self.sql())?;
        while rows.next().map_err(self.sql())?.is_some() {}
        drop(rows);
        let freed = u64::try_from(before - free(self)?).unwrap_or(0);
        let _: Option<i64> = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0)).optional().map_err(self.sql())?;
        Ok(freed)
    }
}
