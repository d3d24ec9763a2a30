//! Retention while running, from the loop's tick: on the `[retention]`
//! interval (at once again while a pass leaves rows to delete) the store is
//! pruned in bounded batches ([`allot_store::Store::prune`]), and exited
//! agents leave the governor's memory after `forget_exited_after` or beyond
//! `forget_exited_beyond` of them, the longest exited first.
//!
//! A forgotten agent keeps its history in the store (its row, events,
//! enforcement records, samples, rollups, until the store's own retention);
//! its open rollup minute is stored first, and its channel file removed.
//! `GET /v1/agents/{id}` then answers from its stored row (state `exited`,
//! its exit reason), 404 once that row is pruned too; `GET /v1/agents` lists
//! only the agents in memory. Only a governor that serves an API forgets
//! agents: without one (`allot up`) the agents are the fleet file's, a fixed
//! set, and the run's summary names how each ended.

use super::control::{AgentStatus, HeldBy};
use super::{Backend, Governor};
use crate::fleet::RetentionSettings;
use allot_core::{AgentId, Time};
use serde_json::Value;
use std::collections::BTreeMap;

/// The retention part: when the store is pruned next, and since when each exited agent is known to have exited.
#[derive(Debug)]
pub(super) struct Pruning {
    pub(super) settings: RetentionSettings,
    next: Time,
    /// Exited agents: (incarnation, when first seen exited).
    exited: BTreeMap<AgentId, (u64, Time)>,
}

impl Pruning {
    /// Due at the first tick.
    pub(super) fn new(settings: RetentionSettings, now: Time) -> Self {
        Pruning { settings, next: now, exited: BTreeMap::new() }
    }
}

impl<B: Backend> Governor<B> {
    /// On the retention interval: prune the store; when serving an API, forget exited agents.
    pub(super) fn retain(&mut self, serving: bool) {
        let now = self.clock.now();
        if now < self.retention.next {
            return;
        }
        let started = std::time::Instant::now();
        let more = match self.recorder.store.prune(&self.retention.settings.store, now.as_millis()) {
            Ok(r) => {
                if r.total() > 0 {
                    tracing::info!(
                        samples = r.samples,
                        rollups = r.rollups,
                        events = r.events,
                        enforcement = r.enforcement,
                        analyses = r.analyses,
                        agents = r.agents,
                        for_size = r.for_size,
                        more = r.more,
                        size = r.size,
                        vacuumed_pages = r.vacuumed_pages,
                        ms = started.elapsed().as_millis() as u64,
                        "pruned"
                    );
                }
                r.more
            }
            Err(e) => {
                tracing::error!(error = %e, "retention: the store could not be pruned");
                false
            }
        };
        self.retention.next = if more { now } else { now.plus(self.retention.settings.interval) };
        if serving {
            self.forget_exited(now);
        }
    }

    /// Forget exited agents exited longer than `forget_exited_after`, and
    /// the longest exited beyond `forget_exited_beyond`.
    fn forget_exited(&mut self, now: Time) {
        let seen = std::mem::take(&mut self.retention.exited);
        for (id, a) in self.agents.map.iter().filter(|(_, a)| a.is_exited()) {
            let since = seen.get(id).filter(|(inc, _)| *inc == a.incarnation).map_or(now, |(_, t)| *t);
            self.retention.exited.insert(id.clone(), (a.incarnation, since));
        }
        let after = self.retention.settings.forget_exited_after;
        let mut by_age: Vec<(Time, AgentId)> = self.retention.exited.iter().map(|(id, (_, t))| (*t, id.clone())).collect();
        by_age.sort();
        let beyond = by_age.len().saturating_sub(self.retention.settings.forget_exited_beyond);
        let gone: Vec<AgentId> =
            by_age.into_iter().enumerate().filter(|(i, (t, _))| *i < beyond || t.plus(after) <= now).map(|(_, (_, id))| id).collect();
        for id in &gone {
            self.forget_agent(id);
        }
        if !gone.is_empty() {
            tracing::info!(
                agents = gone.len(),
                in_memory = self.agents.map.len(),
                "exited agents forgotten (their history stays in the store)"
            );
        }
    }

    /// Drop an exited agent from memory: its open rollups stored, its analytics windows and channel file gone.
    fn forget_agent(&mut self, id: &AgentId) {
        self.retention.exited.remove(id);
        let Some(a) = self.agents.map.remove(id) else { return };
        for (res, roll) in self.flush_agent_rollups(id.as_str()) {
            let _ = self.recorder.store.put_rollup(id.as_str(), &res, &roll);
        }
        self.analysis.forget(id);
        self.timers.forget(id);
        self.domain.alerts.forget(id);
        if let Ok(key) = AgentId::new(format!("forecast:{id}")) {
            self.domain.alerts.forget(&key);
        }
        let _ = std::fs::remove_file(a.channel.path());
    }

    /// An agent no longer in memory, as its stored row says, when it exited.
    pub(super) fn stored_status(&self, id: &AgentId) -> Option<AgentStatus> {
        let row = self.recorder.store.agent(id.as_str()).ok()??;
        let user = row.spec().ok().and_then(|s| s.user);
        (row.state_name().ok()? == allot_store::AgentStateName::Exited).then(|| AgentStatus {
            uid: user.map(|u| u.0),
            root: user.is_some_and(|u| u.0 == 0),
            budgets: Value::Null,
            id: row.id,
            group: row.group,
            state: row.state,
            // The cause is not stored; the reason text says it.
            exit_cause: None,
            exit: row.exit,
            pids: Vec::new(),
            usage: BTreeMap::new(),
            disk_io_source: None,
            last_action: String::new(),
            held_by: HeldBy::default(),
            quota: Value::Null,
        })
    }
}
