//! Kernel backstops (SPEC section 4): the values are pure
//! (`allot_core::backstops`: memory ceiling and pids.max at burst when a
//! burst is set, memory.high at hard when memory's action is throttle, cpu
//! weight from priority, group totals); here they are written through the
//! agent's and its group's actuators, and every write's outcome is published.

use super::{Backend, Governor};
use allot_core::{AgentId, Resource, backstops, events};
use allot_sys::SysError;
use allot_sys::actuate::Outcome;
use serde_json::{Value, json};

fn note(what: &str, r: Result<Outcome, SysError>) -> Value {
    match r {
        Ok(o) => json!({"what": what, "outcome": "success", "writes": o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect::<Vec<_>>()}),
        Err(e) => json!({"what": what, "outcome": "failure", "error": e.to_string()}),
    }
}

impl<B: Backend> Governor<B> {
    /// Write an agent's backstops and its group's totals, and publish what was written.
    pub(super) fn apply_backstops(&mut self, id: &AgentId) {
        let Some(q) = self.domain.ledger.quota(id).cloned() else { return };
        let now = self.clock.now();
        let values = backstops::agent(&q);
        let mut notes = Vec::new();
        if let Some(act) = self.agents.get_mut(id).and_then(|a| a.proc.as_mut()).map(|p| &mut p.actuator) {
            notes.push(note("cpu weight", act.set_cpu_weight(values.cpu_weight)));
            if let Some(v) = values.memory_max {
                notes.push(note("memory ceiling at burst", act.set_memory_max(Some(v))));
            }
            if let Some(v) = values.memory_high {
                notes.push(note("memory.high at hard", act.set_memory_high(Some(v))));
            }
            if let Some(v) = values.pids_max {
                notes.push(note("pids.max at burst", act.set_pids_max(Some(v))));
            }
        }
        if let Some(g) = self.domain.ledger.group(&q.group).cloned() {
            if let Some(mut ga) = self.backend.group_actuator(&g.name) {
                let mut results = Vec::new();
                for (r, v) in backstops::group(&g, self.domain.ledger.members(&g.name).count()) {
                    let res = match r {
                        Resource::Memory => ga.set_memory_max(Some(v)),
                        Resource::Processes => ga.set_pids_max(Some(v)),
                        _ => ga.set_cpu_limit(Some(v)),
                    };
                    results.push(json!({"resource": r.name(), "total": v, "outcome": res.map_or_else(|e| e.to_string(), |_| "success".into())}));
                }
                notes.push(json!({"group_totals": g.name, "results": results}));
            }
        }
        self.recorder.emit(now, events::BACKSTOPS, Some(id.as_str()), json!({"backstops": notes}));
    }
}
