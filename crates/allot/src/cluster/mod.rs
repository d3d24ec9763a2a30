//! Cluster mode (issue 15): daemons on several hosts share group totals and
//! budgets through etcd. Each total has a ledger in etcd
//! ([`allot_core::grants::GrantLedger`]: the total and each node's slice
//! under its lease); each node enforces its slice locally (kernel totals on
//! its group cgroup, the slice as a cap of its local budget) and changes it
//! with a compare-and-swap on the ledger's revision, in chunks.
//!
//! - `etcd`: the client (etcd's JSON gateway, no protoc needed).
//! - `node`: registration under a lease, keepalive, the grant loop, the
//!   deadline and safe capacity, the watch of the cluster prefix.
//! - `view`: what a node knows of the cluster, kept by its watch.
//! - `status`: `allot cluster status`.
//!
//! Keys (all under [`PREFIX`]): `nodes/<node>` (under the node's lease: its
//! capacity, use and agents), `ledger/<total>` (a total's ledger, see
//! [`TotalId::key`]), `events/<ms>-<node>-<n>` (cluster events: migrations),
//! `migrations/<node>/<agent>` (an agent to start on that node).

pub mod etcd;
pub mod migrate;
pub mod node;
pub mod status;
pub mod view;

use allot_core::Resource;
use allot_core::budget::Level;
use std::time::Duration;

/// Every key of allot in etcd starts with this.
pub const PREFIX: &str = "/allot/";

/// One cluster-wide total.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TotalId {
    /// A group's kernel total (memory, cpu, processes) on its group cgroup.
    Kernel { group: String, resource: Resource },
    /// A group's or pool's budget on a custom resource.
    Budget { level: Level, resource: Resource },
}

impl TotalId {
    /// Its ledger's key.
    pub fn key(&self) -> String {
        match self {
            TotalId::Kernel { group, resource } => format!("{PREFIX}ledger/group/{group}/{resource}"),
            TotalId::Budget { level, resource } => format!("{PREFIX}ledger/budget/{level}/{resource}"),
        }
    }

    /// The total as a key's tail names it (`group/<g>/<resource>`, `budget/<level>/<resource>`).
    pub fn from_key(key: &str) -> Option<TotalId> {
        let rest = key.strip_prefix(PREFIX)?.strip_prefix("ledger/")?;
        if let Some(r) = rest.strip_prefix("group/") {
            let (group, res) = r.split_once('/')?;
            return Some(TotalId::Kernel { group: group.to_owned(), resource: res.parse().ok()? });
        }
        let (level, res) = rest.strip_prefix("budget/")?.split_once('/')?;
        Some(TotalId::Budget { level: level.parse().ok()?, resource: res.parse().ok()? })
    }

    /// As people read it: `group standard_agent memory`, `pool:team tokens`.
    pub fn label(&self) -> String {
        match self {
            TotalId::Kernel { group, resource } => format!("group {group} {resource}"),
            TotalId::Budget { level, resource } => format!("{level} {resource}"),
        }
    }

    /// Whether this is a budget (refused after the deadline) rather than a kernel total (held).
    pub fn is_budget(&self) -> bool {
        matches!(self, TotalId::Budget { .. })
    }
}

/// What a node needs of one total now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub id: TotalId,
    /// The total as this node is configured with it (the ledger's is the cluster's).
    pub total: u64,
    /// What the node uses of it: members' usage, or spent + reserved in the window.
    pub used: u64,
    /// How long a dead node's slice stays out of the pool: a budget's window
    /// (its spend stays counted); `None` for kernel totals.
    pub keep: Option<Duration>,
}

/// A node's cluster settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub node: String,
    pub ttl: Duration,
    pub margin: Duration,
    /// Chunks as a percentage of each total.
    pub chunk_percent: u64,
}

/// Check a node name: 1 to 63 letters, digits, '-', '_', '.'.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok { Ok(()) } else { Err(format!("--node {name:?}: use 1 to 63 letters, digits, '-', '_' or '.'")) }
}

/// The chunk of a total: its percentage, at least 1.
pub fn chunk(total: u64, percent: u64) -> u64 {
    u64::try_from(u128::from(total) * u128::from(percent.min(100)) / 100).unwrap_or(u64::MAX).max(1)
}

/// Milliseconds since the Unix epoch (the clock shared by the nodes for held slices).
pub fn wall_now() -> allot_core::Time {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    allot_core::Time::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_total_s_key_names_it_and_reads_back() {
        let k = TotalId::Kernel { group: "standard_agent".into(), resource: Resource::Memory };
        assert_eq!(k.key(), "/allot/ledger/group/standard_agent/memory");
        assert_eq!(TotalId::from_key(&k.key()), Some(k));
        let b = TotalId::Budget { level: Level::Pool("team".into()), resource: Resource::Custom("tokens".into()) };
        assert_eq!(b.key(), "/allot/ledger/budget/pool:team/tokens");
        assert_eq!(TotalId::from_key(&b.key()), Some(b));
        assert_eq!(TotalId::from_key("/allot/nodes/a"), None);
    }

    #[test]
    fn node_names_and_chunks() {
        assert!(check_node_name("node-1.a_b").is_ok());
        for bad in ["", "a/b", "..", "x y", &"n".repeat(64)] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(chunk(1000, 5), 50);
        assert_eq!(chunk(10, 5), 1);
        assert_eq!(chunk(u64::MAX, 100), u64::MAX);
    }
}
