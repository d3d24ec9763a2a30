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
        let now = self.clock.now();
        let mut notes: Vec<Value> =
            match self.apply(Intent { agent: id.clone(), source: Source::Backstop, op: Op::Backstops(backstops::agent(&q)) }) {
                Applied::Now { detail, .. } => serde_json::from_str(&detail).unwrap_or_default(),
                Applied::Settling { .. } => Vec::new(),
            };
        if let Some(g) = self.domain.ledger.group(&q.group).cloned() {
            if let Some(mut ga) = self.backend.group_actuator(&g.name) {
                let totals = backstops::group(&g, self.domain.ledger.members(&g.name).count());
                notes.push(json!({"group_totals": g.name, "results": group_totals(ga.as_mut(), &totals)}));
            }
        }
        self.recorder.emit(now, events::BACKSTOPS, Some(id.as_str()), json!({"backstops": notes}));
    }
}
