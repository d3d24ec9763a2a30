//! Persisted agents: their row ([`StoredAgent`]), their state names
//! ([`AgentStateName`]), and typed views of the JSON columns (the spec as a
//! [`StoredSpec`], the cgroup directories as paths).

use crate::dto::StoredSpec;
use crate::names::{UnknownName, text_enum};
use crate::{Store, StoreError, ms, sql_i};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

/// The state of a persisted agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStateName {
    /// Stored before its command is started: a crash before the start is
    /// confirmed leaves a row recovery finds (and stops what runs in its cgroup).
    Starting,
    /// Running under its limits.
    Running,
    /// Running with its share lowered.
    Throttled,
    /// Frozen.
    Suspended,
    /// Told to stop; killed after a grace period.
    Terminating,
    /// Exited, and about to be started again.
    Restarting,
    /// Gone.
    Exited,
}

text_enum!(AgentStateName, "agent state", {
    Starting => "starting",
    Running => "running",
    Throttled => "throttled",
    Suspended => "suspended",
    Terminating => "terminating",
    Restarting => "restarting",
    Exited => "exited",
});

/// A persisted agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredAgent {
    /// Id.
    pub id: String,
    /// Group.
    pub group: String,
    /// State: the name of an [`AgentStateName`] (see [`StoredAgent::state_name`]).
    pub state: String,
    /// Leader pid, while running.
    pub pid: Option<u32>,
    /// The agent's cgroup directories (JSON list), if any (see [`StoredAgent::cgroup_dirs`]).
    pub cgroup: Value,
    /// The agent definition: a [`StoredSpec`] as JSON (see [`StoredAgent::spec`]).
    pub spec: Value,
    /// How it exited, if it did.
    pub exit: Option<String>,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: u64,
}

impl StoredAgent {
    /// The stored spec, typed.
    pub fn spec(&self) -> Result<StoredSpec, StoreError> {
        serde_json::from_value(self.spec.clone()).map_err(|source| StoreError::Spec { agent: self.id.clone(), source })
    }

    /// The agent's cgroup directories (none when it had no cgroup).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup.as_array().map(|v| v.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect()).unwrap_or_default()
    }

    /// The state, typed.
    pub fn state_name(&self) -> Result<AgentStateName, UnknownName> {
        self.state.parse()
    }
}

impl Store {
    /// Insert or replace an agent's row.
    pub fn put_agent(&self, a: &StoredAgent) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO agents (id, grp, state, pid, cgroup, spec, exit, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT(id) DO UPDATE SET grp = ?2, state = ?3, pid = ?4, cgroup = ?5, spec = ?6, exit = ?7, updated_ms = ?8",
                params![a.id, a.group, a.state, a.pid, a.cgroup.to_string(), a.spec.to_string(), a.exit, sql_i(a.updated_ms)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Change an agent's state (and exit reason, which is kept when `None`).
    pub fn set_agent_state(&self, id: &str, state: AgentStateName, exit: Option<&str>, at_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE agents SET state = ?2, exit = COALESCE(?3, exit), updated_ms = ?4 WHERE id = ?1",
                params![id, state, exit, sql_i(at_ms)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Result<Option<StoredAgent>, StoreError> {
        Ok(self.query_agents(Some(id))?.pop())
    }

    /// Every agent.
    pub fn agents(&self) -> Result<Vec<StoredAgent>, StoreError> {
        self.query_agents(None)
    }

    /// The agent `id`, or every agent.
    fn query_agents(&self, id: Option<&str>) -> Result<Vec<StoredAgent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, grp, state, pid, cgroup, spec, exit, updated_ms FROM agents WHERE (?1 IS NULL OR id = ?1) ORDER BY id")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![id], |r| <(String, String, String, Option<u32>, String, String, Option<String>, i64)>::try_from(r))
            .map_err(self.sql())?;
        rows.map(|row| {
            let (id, group, state, pid, cgroup, spec, exit, updated) = row.map_err(self.sql())?;
            Ok(StoredAgent {
                cgroup: self.json(&cgroup, || format!("agent {id} cgroup"))?,
                spec: self.json(&spec, || format!("agent {id} spec"))?,
                id,
                group,
                state,
                pid,
                exit,
                updated_ms: ms(updated),
            })
        })
        .collect()
    }
}
