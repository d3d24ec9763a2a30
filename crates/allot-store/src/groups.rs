//! Persisted quota groups: those created or changed through the daemon's
//! API, as [`StoredGroup`] DTOs, so that a restarted daemon has them before
//! it resolves its agents' quotas. A deleted group's row is deleted.

use crate::dto::StoredGroup;
use crate::{Store, StoreError, sql_i};
use rusqlite::params;

impl Store {
    /// Insert or replace a group's row.
    pub fn put_group(&self, g: &StoredGroup, at_ms: u64) -> Result<(), StoreError> {
        let spec = serde_json::to_string(g).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            what: format!("group {}", g.name),
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO groups (name, spec, updated_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET spec = ?2, updated_ms = ?3",
                params![g.name, spec, sql_i(at_ms)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Delete a group's row; whether there was one.
    pub fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM groups WHERE name = ?1", params![name]).map_err(self.sql())? > 0)
    }

    /// Every stored group, by name.
    pub fn groups(&self) -> Result<Vec<StoredGroup>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name, spec FROM groups ORDER BY name").map_err(self.sql())?;
        let rows = stmt.query_map([], |r| <(String, String)>::try_from(r)).map_err(self.sql())?;
        rows.map(|row| {
            let (name, spec) = row.map_err(self.sql())?;
            self.json(&spec, || format!("group {name}"))
        })
        .collect()
    }
}
