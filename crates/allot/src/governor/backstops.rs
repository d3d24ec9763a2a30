//! Kernel backstops (SPEC section 4): the values are pure
//! (`allot_core::backstops`: memory ceiling and pids.max at burst when a
//! burst is set, memory.high at hard when memory's action is throttle, cpu
//! weight from priority, group totals); here they are written through the
//! agent's and its group's actuators, and every write's outcome is published.

use super::intent::{Applied, Intent, Op, Source, group_totals};
use super::{Backend, Governor};
use allot_core::{AgentId, backstops, events};
use serde_json::{Value, json};

impl<B: Backend> Governor<B> {
    /// Write an agent's backstops (an intent) and its group's totals, and publish what was written.
    pub(super) fn apply_backstops(&mut self, id: &AgentId) {
        let Some(q) = self.domain.ledger.quota(id).cloned() else { return };
        let mut notes: Vec<Value> =
            match self.apply(Intent { agent: id.clone(), source: Source::Backstop, op: Op::Backstops(backstops::agent(&q)) }) {
                Applied::Now { detail, .. } => serde_json::from_str(&detail).unwrap_or_default(),
                Applied::Settling { .. } => Vec::new(),
            };
        notes.extend(self.write_group_totals(id));
        self.publish_backstops(id, notes, false);
    }

    /// Write the totals of an agent's group on the group's cgroup (creating it); one note.
    pub(super) fn write_group_totals(&mut self, id: &AgentId) -> Option<Value> {
        let group = self.domain.ledger.quota(id)?.group.clone();
        let g = self.domain.ledger.group(&group).cloned()?;
        let mut ga = self.backend.group_actuator(&g.name)?;
        let totals = backstops::group(&g, self.domain.ledger.members(&g.name).count());
        Some(json!({"group_totals": g.name, "results": group_totals(ga.as_mut(), &totals)}))
    }

    /// Publish what was written; `before_exec`: written before the agent's command ran.
    pub(super) fn publish_backstops(&mut self, id: &AgentId, notes: Vec<Value>, before_exec: bool) {
        let now = self.clock.now();
        self.recorder.emit(now, events::BACKSTOPS, Some(id.as_str()), json!({"backstops": notes, "before_exec": before_exec}));
    }
}
