//! The measured series: raw samples (written in batches, read by range or
//! newest first), per-minute rollups, and the latest analysis per agent and
//! resource.

use crate::{Store, StoreError, ms, rollup, sql_i};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

impl Store {
    /// Store a per-minute rollup.
    pub fn put_rollup(&self, agent: &str, resource: &str, r: &rollup::Rollup) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO rollups (agent, resource, minute, min, mean, p95, max, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![agent, resource, sql_i(r.minute), sql_i(r.min), r.mean, sql_i(r.p95), sql_i(r.max), sql_i(r.count)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Store a batch of rollups `(agent, resource, rollup)` in one transaction.
    pub fn put_rollups(&mut self, batch: &[(String, String, rollup::Rollup)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| StoreError::Sql { path: path.clone(), source };
        let tx = self.conn.savepoint().map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO rollups (agent, resource, minute, min, mean, p95, max, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(e)?;
            for (agent, resource, r) in batch {
                stmt.execute(params![agent, resource, sql_i(r.minute), sql_i(r.min), r.mean, sql_i(r.p95), sql_i(r.max), sql_i(r.count)])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Rollups of an agent's resource since a minute (minutes since the Unix epoch).
    pub fn rollups(&self, agent: &str, resource: &str, since_minute: u64) -> Result<Vec<rollup::Rollup>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT minute, min, mean, p95, max, count FROM rollups WHERE agent = ?1 AND resource = ?2 AND minute >= ?3 ORDER BY minute")
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![agent, resource, sql_i(since_minute)], rollup_row).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Delete rollups older than a minute; returns how many.
    pub fn prune_rollups(&self, before_minute: u64) -> Result<usize, StoreError> {
        self.conn.execute("DELETE FROM rollups WHERE minute < ?1", params![sql_i(before_minute)]).map_err(self.sql())
    }

    /// Store a batch of raw samples `(agent, resource, at_ms, value)` in one transaction.
    pub fn put_samples(&mut self, batch: &[(String, String, u64, u64)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| StoreError::Sql { path: path.clone(), source };
        let tx = self.conn.savepoint().map_err(e)?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO samples (agent, resource, at_ms, value) VALUES (?1, ?2, ?3, ?4)").map_err(e)?;
            for (a, r, at, v) in batch {
                stmt.execute(params![a, r, sql_i(*at), sql_i(*v)]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Raw samples of an agent's resource since a time, oldest first.
    pub fn samples(&self, agent: &str, resource: &str, since_ms: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, value FROM samples WHERE agent = ?1 AND resource = ?2 AND at_ms >= ?3 ORDER BY at_ms")
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![agent, resource, sql_i(since_ms)], |r| Ok((ms(r.get(0)?), ms(r.get(1)?)))).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Raw samples of an agent's resource from `since_ms` to `until_ms` (both
    /// included), oldest first, at most `limit` of them (the oldest): a
    /// caller that gets `limit` rows knows the range may hold more.
    pub fn samples_between(
        &self,
        agent: &str,
        resource: &str,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, value FROM samples WHERE agent = ?1 AND resource = ?2 AND at_ms >= ?3 AND at_ms <= ?4 ORDER BY at_ms LIMIT ?5")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![agent, resource, sql_i(since_ms), sql_i(until_ms), sql_i(limit as u64)], |r| {
                Ok((ms(r.get(0)?), ms(r.get(1)?)))
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The newest `limit` raw samples of an agent's resource since a time, oldest first.
    pub fn newest_samples(&self, agent: &str, resource: &str, since_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, value FROM samples WHERE agent = ?1 AND resource = ?2 AND at_ms >= ?3 ORDER BY at_ms DESC LIMIT ?4")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![agent, resource, sql_i(since_ms), sql_i(limit as u64)], |r| Ok((ms(r.get(0)?), ms(r.get(1)?))))
            .map_err(self.sql())?;
        let mut out: Vec<(u64, u64)> = rows.collect::<Result<_, _>>().map_err(self.sql())?;
        out.reverse();
        Ok(out)
    }

    /// Per-minute rollups of an agent's resource from minute `since` to
    /// minute `until` (both included), oldest first, at most `limit`.
    pub fn rollups_between(
        &self,
        agent: &str,
        resource: &str,
        since: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<rollup::Rollup>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT minute, min, mean, p95, max, count FROM rollups WHERE agent = ?1 AND resource = ?2 AND minute >= ?3 AND minute <= ?4 \
                 ORDER BY minute LIMIT ?5",
            )
            .map_err(self.sql())?;
        let rows =
            stmt.query_map(params![agent, resource, sql_i(since), sql_i(until), sql_i(limit as u64)], rollup_row).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The resources with samples for an agent: one index lookup per
    /// resource (not a scan of the agent's samples).
    pub fn sampled_resources(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT resource FROM samples WHERE agent = ?1 AND resource > ?2 ORDER BY resource LIMIT 1")
            .map_err(self.sql())?;
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().map_or("", String::as_str);
            let next: Option<String> = stmt.query_row(params![agent, after], |r| r.get(0)).optional().map_err(self.sql())?;
            match next {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    /// Delete samples older than a time (retention); returns how many.
    pub fn prune_samples(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.conn.execute("DELETE FROM samples WHERE at_ms < ?1", params![sql_i(before_ms)]).map_err(self.sql())
    }

    /// Store the latest analysis of an agent's resource (one row per agent and
    /// resource: one agent's run never touches another's) with the
    /// recommendation that stands after it: `None` clears an older one, which
    /// belonged to an older analysis.
    pub fn put_analysis(
        &self,
        agent: &str,
        resource: &str,
        at_ms: u64,
        pattern: &Value,
        recommendation: Option<&Value>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO analyses (agent, resource, at_ms, pattern, recommendation) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(agent, resource) DO UPDATE SET at_ms = ?3, pattern = ?4, recommendation = ?5",
                params![agent, resource, sql_i(at_ms), pattern.to_string(), recommendation.map(Value::to_string)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Analyses, for one agent or all: (agent, resource, at_ms, pattern, recommendation).
    #[allow(clippy::type_complexity)]
    pub fn analyses(&self, agent: Option<&str>) -> Result<Vec<(String, String, u64, Value, Option<Value>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT agent, resource, at_ms, pattern, recommendation FROM analyses WHERE (?1 IS NULL OR agent = ?1) ORDER BY agent, resource")
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![agent], |r| <(String, String, i64, String, Option<String>)>::try_from(r)).map_err(self.sql())?;
        rows.map(|row| {
            let (a, r, at, p, rec) = row.map_err(self.sql())?;
            let what = || format!("analysis {a}/{r}");
            let p = self.json(&p, what)?;
            let rec = rec.map(|x| self.json(&x, what)).transpose()?;
            Ok((a, r, ms(at), p, rec))
        })
        .collect()
    }
}

/// A rollup from a row `minute, min, mean, p95, max, count`.
fn rollup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<rollup::Rollup> {
    Ok(rollup::Rollup {
        minute: ms(r.get(0)?),
        min: ms(r.get(1)?),
        mean: r.get(2)?,
        p95: ms(r.get(3)?),
        max: ms(r.get(4)?),
        count: ms(r.get(5)?),
    })
}
