//! Moving a restartable agent between nodes (cluster mode's `migrate`).
//!
//! The source node's governor hands the agent's definition ([`Moving`]) to
//! its node task, which picks the node with the most headroom for the
//! agent's memory ([`target`]: the most memory available among the other
//! live nodes, at least the agent's memory hard limit) and writes
//! `migrations/<target>/<agent>`; the source then stops the agent (notice,
//! grace) and records the move. The target's node task sees the key in its
//! watch, deletes it and starts the agent through its governor, and records
//! the arrival. Both write `events/<ms>-<node>-<agent>` for the cluster.
//!
//! Trust: whoever can write etcd can ask a node to start a command (as a
//! named non-root user) and can change the ledgers; etcd must be reachable
//! by the daemons only. A request without a user or with uid 0 is refused,
//! and only nodes whose record lives under a live lease are targets.

use allot_core::AgentId;
use allot_core::quota::{AgentSpec, Priority};
use allot_store::dto::StoredOverride;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An agent on its way to another node: what it takes to start it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    pub agent: String,
    pub group: String,
    pub priority: u8,
    #[serde(default)]
    pub overrides: BTreeMap<String, StoredOverride>,
    #[serde(default)]
    pub pools: Vec<String>,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<(u32, u32)>,
    /// The node it leaves.
    pub from: String,
    /// The node it goes to (set when a target was found).
    #[serde(default)]
    pub to: String,
    /// Why: the resource at fault and its usage.
    pub resource: String,
    pub usage: u64,
    /// Its memory hard limit: the headroom a target needs.
    pub memory: u64,
}

impl Moving {
    /// An agent's definition, leaving `from`.
    pub fn of(def: &crate::fleet::AgentDef, memory: u64, from: &str, resource: &str, usage: u64) -> Moving {
        Moving {
            agent: def.spec.id.to_string(),
            group: def.spec.group.clone(),
            priority: def.spec.priority.get(),
            overrides: allot_store::dto::overrides_from_core(&def.spec.overrides),
            pools: def.spec.pools.clone(),
            command: def.command.clone(),
            env: def.env.clone(),
            workdir: def.workdir.clone(),
            user: def.user,
            from: from.to_owned(),
            to: String::new(),
            resource: resource.to_owned(),
            usage,
            memory,
        }
    }

    /// The definition to start on the target (restartable still).
    pub fn to_def(&self) -> Result<crate::fleet::AgentDef, String> {
        let id = AgentId::new(self.agent.clone()).map_err(|e| format!("agent: {e}"))?;
        let mut spec = AgentSpec::new(id, self.group.clone());
        spec.priority = Priority::new(i64::from(self.priority)).map_err(|e| format!("priority: {e}"))?;
        for (r, o) in &self.overrides {
            let resource = r.parse().map_err(|e| format!("limits.{r}: {e}"))?;
            spec.overrides.insert(resource, o.to_core(&format!("limits.{r}")).map_err(|e| e.to_string())?);
        }
        spec.pools = self.pools.clone();
        if self.command.is_empty() {
            return Err("no command to start".into());
        }
        // A request comes through etcd, which any client of it can write: it never starts root,
        // nor a process of an unnamed user (the daemon's own, root when it runs as root).
        match self.user {
            None => return Err("no user named: a migrated agent runs only as the user it ran as".into()),
            Some((0, _)) => return Err("uid 0: a migrated agent never runs as root".into()),
            Some(_) => {}
        }
        Ok(crate::fleet::AgentDef {
            spec,
            command: self.command.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            restart: crate::fleet::Restart::Never,
            notify_signal: None,
            user: self.user,
            restartable: true,
        })
    }
}

/// The node with the most memory available among `nodes` (name, record)
/// other than `me`, with at least `need` available; `None`: no node has room.
pub fn target<'a>(nodes: impl Iterator<Item = (&'a String, &'a Value)>, me: &str, need: u64) -> Option<(String, u64)> {
    nodes
        .filter(|(n, _)| n.as_str() != me)
        .filter_map(|(n, r)| Some((n.clone(), r["memory_available"].as_u64()?)))
        .filter(|(_, avail)| *avail >= need)
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_target_is_the_other_node_with_the_most_room() {
        let nodes: BTreeMap<String, Value> = [
            ("a".to_owned(), json!({"memory_available": 9_000})),
            ("b".to_owned(), json!({"memory_available": 5_000})),
            ("c".to_owned(), json!({"memory_available": 7_000})),
            ("d".to_owned(), json!({})),
        ]
        .into_iter()
        .collect();
        assert_eq!(target(nodes.iter(), "a", 1_000), Some(("c".into(), 7_000)));
        assert_eq!(target(nodes.iter(), "a", 8_000), None, "no other node has room");
        assert_eq!(target(nodes.iter(), "c", 0), Some(("a".into(), 9_000)));
    }
}
