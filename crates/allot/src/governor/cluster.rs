//! The governor's side of cluster mode (`crate::cluster`): what this node
//! needs of each cluster total (its demand), and its slices applied
//! locally: a kernel total on the group cgroup is written as the lower of
//! the group's own total and the slice; a budget of a group or a pool is
//! capped at the slice ([`allot_core::budget::Budgets::set_cap`]).
//!
//! The node task calls [`Governor::cluster_apply`] (through `Control`)
//! before it returns slack and after it was granted more, so the kernel
//! limits on the nodes never sum above a total. A kernel total lowered
//! under what the members use is refused by the kernel (EBUSY on v1): the
//! slice is then kept, not returned.

use super::{Backend, Governor};
use crate::cluster::migrate::Moving;
use crate::cluster::{Demand, TotalId};
use allot_core::budget::{Level, WindowSpec};
use allot_core::{AgentId, Decision, Resource, events};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The start of a migrated agent's exit reason here (`migrated by allot to node NODE`).
pub(super) const MIGRATED_TO: &str = "migrated by allot to node ";

/// The kernel totals a cluster shares.
const KERNEL: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Processes];

/// Slices held by this node (cluster mode only).
#[derive(Debug)]
pub(crate) struct ClusterPart {
    /// This node's name.
    pub(super) node: String,
    /// The slice applied per total.
    pub(super) caps: BTreeMap<TotalId, u64>,
    /// Agents handed to the node task to move to another node.
    moves: tokio::sync::mpsc::UnboundedSender<Moving>,
    /// Migrations waiting for the node task's answer: the decision to finish.
    moving: BTreeMap<AgentId, Decision>,
}

/// How long a dead node's slice of a budget stays out of the pool: the
/// budget's window (a calendar window: a month, the longest).
fn keep_for(window: &WindowSpec) -> Duration {
    match window {
        WindowSpec::Rolling(r) => r.length(),
        WindowSpec::Calendar(_) => Duration::from_secs(31 * 24 * 3600),
    }
}

impl<B: Backend> Governor<B> {
    /// Cluster mode on, with the slices first granted (before `run`).
    /// Agents to migrate go to the node task through `moves`.
    pub fn with_cluster(mut self, node: &str, caps: BTreeMap<TotalId, u64>, moves: tokio::sync::mpsc::UnboundedSender<Moving>) -> Self {
        self.cluster = Some(ClusterPart { node: node.to_owned(), caps: BTreeMap::new(), moves, moving: BTreeMap::new() });
        for (id, cap) in caps {
            if let Err(e) = self.cluster_apply(&id, cap) {
                tracing::warn!(total = %id.label(), error = %e, "first slice not applied");
            }
        }
        let now = self.clock.now();
        self.cap_cluster_budgets(now);
        self
    }

    /// This node's demand of every cluster total: each group's kernel
    /// totals (members' usage), each group's and pool's budgets (spent +
    /// reserved in the window).
    pub fn cluster_demand(&self) -> Vec<Demand> {
        let mut out = Vec::new();
        for g in self.domain.ledger.groups() {
            let usage = self.domain.ledger.group_usage(&g.name);
            for r in KERNEL {
                if let Some(&total) = g.totals.get(&r) {
                    let used = usage.get(&r).copied().unwrap_or(0);
                    out.push(Demand { id: TotalId::Kernel { group: g.name.clone(), resource: r.clone() }, total, used, keep: None });
                }
            }
        }
        let now = self.clock.now();
        for v in self.budgets.ledger.snapshot(now) {
            if matches!(v.level, Level::Group(_) | Level::Pool(_)) {
                out.push(Demand {
                    id: TotalId::Budget { level: v.level.clone(), resource: v.resource.clone() },
                    total: v.hard,
                    used: v.spent.saturating_add(v.reserved),
                    keep: Some(keep_for(&v.window)),
                });
            }
        }
        out
    }

    /// This node's capacity, use and agents, as published under its key.
    pub(super) fn cluster_node_info(&self) -> Value {
        let usage: BTreeMap<String, u64> = self.domain.ledger.total_usage().into_iter().map(|(r, v)| (r.name().to_owned(), v)).collect();
        let mem = allot_sys::host::meminfo(&allot_sys::Roots::host()).ok();
        let agents: Vec<Value> = self
            .agents
            .map
            .iter()
            .filter(|(_, a)| a.proc.is_some())
            .map(|(id, a)| json!({"id": id.as_str(), "group": a.def.spec.group}))
            .collect();
        json!({
            "node": self.cluster.as_ref().map(|c| c.node.clone()),
            "memory_total": mem.map(|m| m.total),
            "memory_available": mem.map(|m| m.available),
            "used": usage,
            "agents": agents,
        })
    }

    /// Apply a slice locally; refused when the kernel refuses the total.
    pub(crate) fn cluster_apply(&mut self, id: &TotalId, cap: u64) -> Result<(), String> {
        let Some(part) = self.cluster.as_mut() else { return Err("cluster mode is off".into()) };
        let before = part.caps.insert(id.clone(), cap);
        match id {
            TotalId::Budget { level, resource } => {
                self.budgets.ledger.set_cap(level, resource, Some(cap));
                Ok(())
            }
            TotalId::Kernel { group, resource } => {
                // Written whether or not a member runs now (one between restarts included): the
                // group cgroup's limit must follow every shrink before the slice is returned.
                if self.domain.ledger.group(group).is_none() {
                    return Ok(());
                }
                let note = self.write_totals_of(group);
                let failed = note.as_ref().and_then(|n| n["results"].as_array()).and_then(|rs| {
                    rs.iter().find(|r| r["resource"] == resource.name() && r["outcome"] != "success").map(|r| r["outcome"].to_string())
                });
                match failed {
                    None => Ok(()),
                    Some(why) => {
                        // The kernel kept the earlier total: so does the node.
                        if let Some(part) = self.cluster.as_mut() {
                            match before {
                                Some(b) => part.caps.insert(id.clone(), b),
                                None => part.caps.remove(id),
                            };
                        }
                        let _ = self.write_totals_of(group);
                        Err(format!("{}: the kernel refused {cap}: {why}", id.label()))
                    }
                }
            }
        }
    }

    /// In cluster mode, every group and pool budget capped at this node's
    /// slice: 0 until one is granted (a budget declared through the API is
    /// not spent past the cluster's total before the node asks for a slice).
    pub(super) fn cap_cluster_budgets(&mut self, now: allot_core::Time) {
        let Some(part) = &self.cluster else { return };
        for v in self.budgets.ledger.snapshot(now) {
            if matches!(v.level, Level::Group(_) | Level::Pool(_)) {
                let id = TotalId::Budget { level: v.level.clone(), resource: v.resource.clone() };
                self.budgets.ledger.set_cap(&v.level, &v.resource, Some(part.caps.get(&id).copied().unwrap_or(0)));
            }
        }
    }

    /// A group's totals as written on this node: each kernel total capped at
    /// the node's slice in cluster mode (a total without a slice yet is left
    /// out: the kernel keeps what it has).
    pub(super) fn cluster_capped(&self, group: &str, mut totals: BTreeMap<Resource, u64>) -> BTreeMap<Resource, u64> {
        let Some(part) = &self.cluster else { return totals };
        totals.retain(|r, v| {
            if !KERNEL.contains(r) {
                return true;
            }
            match part.caps.get(&TotalId::Kernel { group: group.to_owned(), resource: r.clone() }) {
                Some(c) => {
                    *v = (*v).min(*c);
                    true
                }
                None => false,
            }
        });
        totals
    }

    /// The policy's migrate of a restartable agent in cluster mode: handed to
    /// the node task, which finds a node with room; `Err`: why it cannot move.
    pub(super) fn migrate_out(&mut self, d: &Decision, usage: u64) -> Result<(), String> {
        let Some(part) = self.cluster.as_ref() else { return Err("no cluster to migrate to".into()) };
        let a = self.agents.get(&d.agent).ok_or("no such agent")?;
        if !a.def.restartable {
            return Err("not restartable (restartable = true moves it)".into());
        }
        if a.def.command.is_empty() {
            return Err("adopted: allot cannot start it elsewhere".into());
        }
        if part.moving.contains_key(&d.agent) {
            return Ok(());
        }
        let memory = self.domain.ledger.quota(&d.agent).and_then(|q| q.limits.get(&Resource::Memory)).map_or(0, |l| l.hard);
        let m = Moving::of(&a.def, memory, &part.node, d.resource.name(), usage);
        part.moves.send(m).map_err(|_| "the cluster's node task is gone".to_owned())?;
        if let Some(part) = self.cluster.as_mut() {
            part.moving.insert(d.agent.clone(), d.clone());
        }
        Ok(())
    }

    /// The node task's answer for a migration: the node it goes to (the agent
    /// is stopped here), or why it cannot move (suspended instead).
    pub(super) fn migrated(&mut self, agent: &str, to: Result<String, String>) {
        let Ok(id) = AgentId::new(agent) else { return };
        let Some(d) = self.cluster.as_mut().and_then(|p| p.moving.remove(&id)) else { return };
        let node = self.cluster.as_ref().map(|p| p.node.clone()).unwrap_or_default();
        match to {
            Ok(to) => {
                self.migrate_away(&d, &to);
                let now = self.clock.now();
                self.recorder.emit(
                    now,
                    events::CLUSTER_MIGRATED,
                    Some(agent),
                    json!({"agent": agent, "from": node, "to": to, "stage": "left", "resource": d.resource.name(),
                           "detail": format!("{agent} moves from node {node} to node {to} ({} over its limit)", d.resource)}),
                );
            }
            Err(why) => self.migrate_fallback(&d, &why),
        }
    }
}
