//! Kernel backstops (SPEC section 4): the values are pure
//! (`allot_core::backstops`: memory ceiling and pids.max at burst when a
//! burst is set, memory.high at hard when memory's action is throttle, cpu
//! weight from priority, group totals); here they are written through the
//! agent's and its group's actuators, and every write's outcome is published.
//! A member's cpu limit is never written above its group's cpu total (cgroup
//! v1 refuses it), and a group's totals are written in the order v1 accepts.
//! A group changed through the API is written again, with its members'
//! backstops; a total the kernel refuses (a memory total under the
//! members' usage: EBUSY on v1) is undone (`restore_totals`).

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
        self.write_totals_of(&group)
    }

    /// Write a group's totals on its cgroup (creating it), in the order
    /// cgroup v1 accepts: a parent's CFS quota below a child's is refused
    /// (EINVAL), so members whose held cpu limit lies above the new cpu
    /// total are lowered to it first, the totals written next, and the other
    /// throttled members written again after (a member lowered under an
    /// earlier, smaller total gets its own limit back). One note with every
    /// write and its outcome.
    pub(super) fn write_totals_of(&mut self, group: &str) -> Option<Value> {
        let g = self.domain.ledger.group(group).cloned()?;
        let totals = self.cluster_capped(&g.name, backstops::group(&g, self.domain.ledger.member_count(&g.name)));
        let cap = totals.get(&allot_core::Resource::Cpu).copied();
        let throttled: Vec<(AgentId, u64)> = self
            .domain
            .ledger
            .members(&g.name)
            .filter_map(|m| Some((m.clone(), self.agents.get(m).filter(|a| a.proc.is_some())?.holds.effective().cpu_millicores?)))
            .collect();
        let (above, under): (Vec<_>, Vec<_>) = throttled.into_iter().partition(|(_, held)| cap.is_some_and(|c| *held > c));
        let mut members = Vec::new();
        for (m, _) in above {
            members.push(self.cap_member(&m));
        }
        let mut ga = self.backend.group_actuator(&g.name)?;
        let results = group_totals(ga.as_mut(), &totals);
        for (m, _) in under {
            members.push(self.cap_member(&m));
        }
        let mut note = json!({"group_totals": g.name, "results": results});
        if !members.is_empty() {
            note["members_cpu"] = Value::Array(members);
        }
        Some(note)
    }

    /// A member's held cpu limit written again under its group's cpu total (an intent); its note.
    fn cap_member(&mut self, id: &AgentId) -> Value {
        let (outcome, detail) = match self.apply(Intent { agent: id.clone(), source: Source::Backstop, op: Op::CapCpu }) {
            Applied::Now { outcome, detail, .. } => (outcome, detail),
            Applied::Settling { detail, .. } => (allot_store::Outcome::Success, detail),
        };
        json!({"agent": id.as_str(), "outcome": outcome.as_str(), "detail": detail})
    }

    /// The members of a group whose processes run.
    pub(super) fn live_members(&self, group: &str) -> Vec<AgentId> {
        self.domain.ledger.members(group).filter(|m| self.agents.get(m).is_some_and(|a| a.proc.is_some())).cloned().collect()
    }

    /// A group's totals written back as the ledger has them again after a
    /// refused change (`tried`: the totals of the change): the earlier
    /// totals written (members capped under the new cpu total get their own
    /// limit back), and a total the change added and the earlier group did
    /// not have cleared.
    pub(super) fn restore_totals(&mut self, group: &str, tried: &std::collections::BTreeMap<allot_core::Resource, u64>) {
        use allot_core::Resource;
        let Some(g) = self.domain.ledger.group(group).cloned() else { return };
        let old = backstops::group(&g, self.domain.ledger.member_count(group));
        let _ = self.write_totals_of(group);
        let pids =
            |t: &std::collections::BTreeMap<Resource, u64>| t.contains_key(&Resource::Processes) || t.contains_key(&Resource::Threads);
        let Some(mut ga) = self.backend.group_actuator(group) else { return };
        let added: Vec<Resource> = tried
            .keys()
            .filter(|r| !old.contains_key(r))
            .filter(|r| !matches!(r, Resource::Processes | Resource::Threads) || !pids(&old))
            .cloned()
            .collect();
        for (r, e) in super::intent::clear_group_totals(ga.as_mut(), &added) {
            tracing::warn!(group, resource = %r, error = %e, "a refused group change could not be undone in the kernel");
        }
    }

    /// A group changed (through the API), its totals already written: since
    /// its defaults are the members' limits, every live member's backstops
    /// written again, its quota stored and announced.
    pub(super) fn members_changed(&mut self, group: &str) {
        let now = self.clock.now();
        for id in &self.live_members(group) {
            let Some(q) = self.domain.ledger.quota(id).cloned() else { continue };
            let notes = match self.apply(Intent { agent: id.clone(), source: Source::Backstop, op: Op::Backstops(backstops::agent(&q)) }) {
                Applied::Now { detail, .. } => serde_json::from_str(&detail).unwrap_or_default(),
                Applied::Settling { .. } => Vec::new(),
            };
            self.publish_backstops(id, notes, false);
            let _ = self.store_agent(id);
            let quota = serde_json::to_value(&q).unwrap_or(Value::Null);
            if let Some(a) = self.agents.get_mut(id) {
                let _ = a.channel.send("quota", json!({"quota": quota}), now.as_millis(), None);
            }
            self.recorder.emit(now, events::QUOTA_CHANGED, Some(id.as_str()), json!({"quota": quota, "group_changed": group}));
        }
    }

    /// Publish what was written; `before_exec`: written before the agent's command ran.
    pub(super) fn publish_backstops(&mut self, id: &AgentId, notes: Vec<Value>, before_exec: bool) {
        let now = self.clock.now();
        self.recorder.emit(now, events::BACKSTOPS, Some(id.as_str()), json!({"backstops": notes, "before_exec": before_exec}));
    }
}
