//! Host memory pressure: when the host itself runs short of memory
//! (MemAvailable under the reservation), suspend agents lowest priority
//! first, then largest excess over quota; release them, most recent first,
//! when memory is back. The choice is pure (`allot_core::pressure::step`);
//! the suspension is an intent with host pressure as its holder, so it
//! never lifts or is lifted by the policy's or the operator's holds.

use super::intent::{Intent, Op, Source};
use super::settle::Attempt;
use super::{Backend, Governor};
use allot_core::pressure::{self, Candidate, HostMemory, PressureStep};
use allot_core::{AgentId, Resource, events};
use allot_store::Outcome;
use serde_json::json;

impl<B: Backend> Governor<B> {
    /// One host-pressure step (at the slow cadence).
    pub(super) fn host_pressure(&mut self) {
        let Ok(mem) = allot_sys::host::meminfo(&allot_sys::Roots::host()) else { return };
        // Agents that exited or were re-created since their suspension are no longer held.
        self.pressure_held.retain(|id| self.agents.get(id).is_some_and(|a| a.holds.holds_freeze(&allot_core::holds::Holder::HostPressure)));
        let host = HostMemory { total: mem.total, available: mem.available };
        let mut step = pressure::step(host, &self.pressure_candidates(), &self.pressure_held);
        if matches!(step, PressureStep::Suspend { .. }) {
            // A victim is chosen by memory: on fresh working sets (allot_core::working_set).
            let ids: Vec<AgentId> = self.pressure_candidates().into_iter().map(|c| c.agent).collect();
            if ids.iter().fold(false, |any, id| self.refresh_working_set(id) | any) {
                step = pressure::step(host, &self.pressure_candidates(), &self.pressure_held);
            }
        }
        match step {
            PressureStep::Suspend { victim, available, reserve } => {
                self.pressure_held.push(victim.clone());
                let data = json!({"reason": "host_memory_pressure", "available": available, "reserve": reserve});
                let why = format!("host memory available {available} under reserve {reserve}: ");
                self.pressure_act(&victim, Op::Freeze, "suspend", &why, data, Some("suspend (host memory)"));
            }
            PressureStep::Release { agent, available, .. } => {
                self.pressure_held.retain(|id| id != &agent);
                let data = json!({"reason": "host_memory_recovered", "available": available});
                self.pressure_act(&agent, Op::Thaw, "restore", &format!("host memory back ({available} available): "), data, None);
            }
            PressureStep::Nothing => {}
        }
    }

    /// The agents host memory pressure may suspend, with their memory and soft limit.
    fn pressure_candidates(&self) -> Vec<Candidate> {
        self.agents
            .map
            .iter()
            .filter(|(_, a)| a.is_active() && !a.holds.is_frozen() && matches!(a.lifecycle, super::agents::Lifecycle::Live))
            .map(|(id, a)| Candidate {
                agent: id.clone(),
                priority: a.def.spec.priority.get(),
                memory: a.usage.get(&Resource::Memory).copied().unwrap_or(0),
                soft: self.domain.ledger.quota(id).and_then(|q| q.limits.get(&Resource::Memory)).map_or(0, |l| l.soft),
            })
            .collect()
    }

    fn pressure_act(&mut self, id: &AgentId, op: Op, action: &str, why: &str, data: serde_json::Value, last: Option<&str>) {
        let attempt = Attempt {
            agent: id.clone(),
            at: self.clock.now(),
            resource: "memory".into(),
            action: action.into(),
            topic: events::enforcement_topic(action),
            data,
            prefix: why.to_owned(),
            last_action: last.map(str::to_owned),
            success: Outcome::Success,
            reply: None,
        };
        let applied = self.apply(Intent { agent: id.clone(), source: Source::HostPressure, op });
        self.conclude(attempt, applied);
    }
}
