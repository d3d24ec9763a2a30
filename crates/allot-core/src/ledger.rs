//! The ledger: registered agents, their quotas and latest usage, compliance
//! checks (soft / burst / hard, with burst tracked against its window) and
//! group totals.

use crate::group::{BUILTIN_GROUPS, GroupError, QuotaGroup, builtin_groups};
use crate::limits::{Limit, LimitError};
use crate::quota::{AgentId, AgentSpec, Quota, resolve};
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How far usage is over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Above soft, at most hard.
    Soft,
    /// Above hard, at most burst, for at most the burst window.
    Burst,
    /// Above burst, or above hard for longer than the burst window.
    Hard,
}

/// One resource over one of its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which limit.
    pub kind: ViolationKind,
    /// The resource.
    pub resource: Resource,
    /// The usage that violated it.
    pub usage: u64,
    /// The limit that was crossed (soft for soft, hard for burst and hard).
    pub limit: u64,
}

/// A usage observation with the verdict on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// The agent.
    pub agent: AgentId,
    /// The resource.
    pub resource: Resource,
    /// The usage observed.
    pub usage: u64,
    /// When.
    pub at: Time,
    /// The limit in force, if the quota has one for this resource.
    pub limit: Option<Limit>,
    /// The violation, if any.
    pub violation: Option<Violation>,
}

/// An observation of usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The value in the resource's internal unit.
    pub value: u64,
    /// When it was measured.
    pub at: Time,
}

/// What the ledger refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No group with that name.
    #[error("unknown quota group {group:?}: known groups are {known}")]
    UnknownGroup {
        /// The name asked for.
        group: String,
        /// The names that exist.
        known: String,
    },
    /// The id is taken.
    #[error("agent {0} is already registered")]
    DuplicateAgent(AgentId),
    /// No agent with that id.
    #[error("no agent {0} is registered")]
    UnknownAgent(AgentId),
    /// An override breaks a limit rule.
    #[error("invalid override: {0}")]
    InvalidOverride(#[from] LimitError),
    /// A group definition is invalid.
    #[error("invalid group: {0}")]
    InvalidGroup(#[from] GroupError),
    /// The group name is taken.
    #[error("quota group {0:?} already exists")]
    DuplicateGroup(String),
    /// The group still has members.
    #[error("quota group {group:?} still has {members} member(s)")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// How many agents are in it.
        members: usize,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    spec: AgentSpec,
    quota: Quota,
    usage: BTreeMap<Resource, Observation>,
    above_hard_since: BTreeMap<Resource, Time>,
}

/// A group total exceeded by the sum of its members' usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupViolation {
    /// The group.
    pub group: String,
    /// The resource.
    pub resource: Resource,
    /// The members' summed usage.
    pub usage: u64,
    /// The total in force.
    pub total: u64,
}

/// Agents, groups and usage. Pure: every call that depends on time takes it.
#[derive(Clone, Debug)]
pub struct Ledger {
    groups: BTreeMap<String, QuotaGroup>,
    agents: BTreeMap<AgentId, Entry>,
    /// Each group's members (kept with `agents`: a group's members are found
    /// without a scan of every agent).
    members: BTreeMap<String, std::collections::BTreeSet<AgentId>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::with_builtin_groups()
    }
}

/// The verdict for `usage` against `limit`, given since when usage has been above hard.
pub fn classify(limit: &Limit, usage: u64, above_hard_since: Option<Time>, now: Time) -> Option<ViolationKind> {
    if usage > limit.burst {
        Some(ViolationKind::Hard)
    } else if usage > limit.hard {
        let since = above_hard_since.unwrap_or(now);
        if now.since(since) > limit.burst_window { Some(ViolationKind::Hard) } else { Some(ViolationKind::Burst) }
    } else if usage > limit.soft {
        Some(ViolationKind::Soft)
    } else {
        None
    }
}

impl Ledger {
    /// A ledger with the three built-in groups and no agents.
    pub fn with_builtin_groups() -> Self {
        Ledger {
            groups: builtin_groups().into_iter().map(|g| (g.name.clone(), g)).collect(),
            agents: BTreeMap::new(),
            members: BTreeMap::new(),
        }
    }

    /// The groups: the built-in ones in the sketch's order, then the others by name.
    pub fn groups(&self) -> impl Iterator<Item = &QuotaGroup> {
        let mut all: Vec<&QuotaGroup> = self.groups.values().collect();
        all.sort_by_key(|g| (BUILTIN_GROUPS.iter().position(|b| *b == g.name).unwrap_or(BUILTIN_GROUPS.len()), g.name.as_str()));
        all.into_iter()
    }

    /// One group.
    pub fn group(&self, name: &str) -> Option<&QuotaGroup> {
        self.groups.get(name)
    }

    fn unknown_group(&self, group: &str) -> LedgerError {
        LedgerError::UnknownGroup { group: group.to_owned(), known: self.groups.keys().cloned().collect::<Vec<_>>().join(", ") }
    }

    /// Add a new group.
    pub fn add_group(&mut self, group: QuotaGroup) -> Result<(), LedgerError> {
        if self.groups.contains_key(&group.name) {
            return Err(LedgerError::DuplicateGroup(group.name));
        }
        group.validate(&format!("groups.{}", group.name))?;
        self.groups.insert(group.name.clone(), group);
        Ok(())
    }

    /// Replace a group (built-in or custom) and re-resolve its members'
    /// quotas; nothing changes when any member's quota would become invalid.
    pub fn set_group(&mut self, group: QuotaGroup) -> Result<(), LedgerError> {
        group.validate(&format!("groups.{}", group.name))?;
        let mut updated = Vec::new();
        for (id, e) in self.members(&group.name).filter_map(|id| self.agents.get(id).map(|e| (id, e))) {
            updated.push((id.clone(), resolve(&group, &e.spec, &format!("agents.{id}"))?));
        }
        for (id, quota) in updated {
            if let Some(e) = self.agents.get_mut(&id) {
                e.quota = quota;
            }
        }
        self.groups.insert(group.name.clone(), group);
        Ok(())
    }

    /// Remove a group that has no members.
    pub fn remove_group(&mut self, name: &str) -> Result<QuotaGroup, LedgerError> {
        let members = self.member_count(name);
        if members > 0 {
            return Err(LedgerError::GroupNotEmpty { group: name.to_owned(), members });
        }
        self.groups.remove(name).ok_or_else(|| self.unknown_group(name))
    }

    /// Register an agent; returns its merged quota.
    pub fn register(&mut self, spec: AgentSpec) -> Result<&Quota, LedgerError> {
        if self.agents.contains_key(&spec.id) {
            return Err(LedgerError::DuplicateAgent(spec.id));
        }
        let group = self.groups.get(&spec.group).ok_or_else(|| self.unknown_group(&spec.group))?;
        let quota = resolve(group, &spec, &format!("agents.{}", spec.id))?;
        let id = spec.id.clone();
        self.members.entry(spec.group.clone()).or_default().insert(id.clone());
        let entry = Entry { spec, quota, usage: BTreeMap::new(), above_hard_since: BTreeMap::new() };
        Ok(&self.agents.entry(id).or_insert(entry).quota)
    }

    /// Change an agent's overrides and priority at run time.
    pub fn update_agent(&mut self, spec: AgentSpec) -> Result<&Quota, LedgerError> {
        let group = self.groups.get(&spec.group).ok_or_else(|| self.unknown_group(&spec.group))?;
        let quota = resolve(group, &spec, &format!("agents.{}", spec.id))?;
        let e = self.agents.get_mut(&spec.id).ok_or_else(|| LedgerError::UnknownAgent(spec.id.clone()))?;
        if e.spec.group != spec.group {
            if let Some(m) = self.members.get_mut(&e.spec.group) {
                m.remove(&spec.id);
            }
            self.members.entry(spec.group.clone()).or_default().insert(spec.id.clone());
        }
        e.spec = spec;
        e.quota = quota;
        Ok(&e.quota)
    }

    /// Remove an agent; returns its quota.
    pub fn unregister(&mut self, id: &AgentId) -> Result<Quota, LedgerError> {
        let e = self.agents.remove(id).ok_or_else(|| LedgerError::UnknownAgent(id.clone()))?;
        if let Some(m) = self.members.get_mut(&e.spec.group) {
            m.remove(id);
            if m.is_empty() {
                self.members.remove(&e.spec.group);
            }
        }
        Ok(e.quota)
    }

    /// An agent's quota.
    pub fn quota(&self, id: &AgentId) -> Option<&Quota> {
        self.agents.get(id).map(|e| &e.quota)
    }

    /// The registered agents' ids.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents.keys()
    }

    /// The members of a group.
    pub fn members<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a AgentId> + 'a {
        self.members.get(group).into_iter().flatten()
    }

    /// How many agents a group has.
    pub fn member_count(&self, group: &str) -> usize {
        self.members.get(group).map_or(0, std::collections::BTreeSet::len)
    }

    /// An agent's latest observation of a resource.
    pub fn usage(&self, id: &AgentId, resource: &Resource) -> Option<Observation> {
        self.agents.get(id).and_then(|e| e.usage.get(resource).copied())
    }

    /// Record an observation and assess it against the agent's quota.
    pub fn record(&mut self, id: &AgentId, resource: Resource, value: u64, now: Time) -> Result<Assessment, LedgerError> {
        let e = self.agents.get_mut(id).ok_or_else(|| LedgerError::UnknownAgent(id.clone()))?;
        e.usage.insert(resource.clone(), Observation { value, at: now });
        let limit = e.quota.limits.get(&resource).cloned();
        if let Some(l) = &limit {
            if value > l.hard {
                e.above_hard_since.entry(resource.clone()).or_insert(now);
            } else {
                e.above_hard_since.remove(&resource);
            }
        }
        let violation = limit.as_ref().and_then(|l| violation(l, &resource, value, e.above_hard_since.get(&resource).copied(), now));
        Ok(Assessment { agent: id.clone(), resource, usage: value, at: now, limit, violation })
    }

    /// The agent's current violations, from its latest observations, at `now`.
    pub fn check(&self, id: &AgentId, now: Time) -> Result<Vec<Violation>, LedgerError> {
        let e = self.agents.get(id).ok_or_else(|| LedgerError::UnknownAgent(id.clone()))?;
        Ok(e.quota
            .limits
            .iter()
            .filter_map(|(r, l)| {
                let obs = e.usage.get(r)?;
                violation(l, r, obs.value, e.above_hard_since.get(r).copied(), now)
            })
            .collect())
    }

    /// The sum of the group members' latest usage, per resource.
    pub fn group_usage(&self, group: &str) -> BTreeMap<Resource, u64> {
        let mut sum: BTreeMap<Resource, u64> = BTreeMap::new();
        for e in self.members(group).filter_map(|id| self.agents.get(id)) {
            for (r, obs) in &e.usage {
                let s = sum.entry(r.clone()).or_default();
                *s = s.saturating_add(obs.value);
            }
        }
        sum
    }

    /// The group totals that the members' summed usage exceeds.
    pub fn group_violations(&self, group: &str) -> Result<Vec<GroupViolation>, LedgerError> {
        let g = self.groups.get(group).ok_or_else(|| self.unknown_group(group))?;
        let usage = self.group_usage(group);
        let totals = g.effective_totals(self.member_count(group));
        Ok(totals
            .into_iter()
            .filter_map(|(r, total)| {
                let used = usage.get(&r).copied().unwrap_or(0);
                (used > total).then(|| GroupViolation { group: group.to_owned(), resource: r, usage: used, total })
            })
            .collect())
    }

    /// The sum of every agent's latest usage, per resource.
    pub fn total_usage(&self) -> BTreeMap<Resource, u64> {
        let mut sum: BTreeMap<Resource, u64> = BTreeMap::new();
        for e in self.agents.values() {
            for (r, obs) in &e.usage {
                let s = sum.entry(r.clone()).or_default();
                *s = s.saturating_add(obs.value);
            }
        }
        sum
    }
}

/// Who to suspend first when the host itself runs short (SPEC section 5):
/// lowest priority first, then the largest excess over quota, as the kubelet
/// ranks pods for eviction; ties by id. Input: (agent, priority, excess).
pub fn eviction_order(candidates: &[(AgentId, u8, u64)]) -> Vec<AgentId> {
    let mut v: Vec<&(AgentId, u8, u64)> = candidates.iter().collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    v.into_iter().map(|c| c.0.clone()).collect()
}

fn violation(limit: &Limit, resource: &Resource, usage: u64, since: Option<Time>, now: Time) -> Option<Violation> {
    let kind = classify(limit, usage, since, now)?;
    let crossed = if kind == ViolationKind::Soft { limit.soft } else { limit.hard };
    Some(Violation { kind, resource: resource.clone(), usage, limit: crossed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitOverride;
    use std::time::Duration;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    /// Agent `name` in `group`, with its memory limit overridden.
    fn with_memory(name: &str, group: &str, memory: LimitOverride) -> AgentSpec {
        let mut spec = AgentSpec::new(id(name), group);
        spec.overrides.insert(Resource::Memory, memory);
        spec
    }

    fn kinds(v: &[Violation]) -> Vec<(Resource, ViolationKind)> {
        v.iter().map(|v| (v.resource.clone(), v.kind)).collect()
    }

    /// The members index follows registering, moving between groups and
    /// unregistering: the same members, in the same order, as a scan.
    #[test]
    fn group_members_are_indexed_as_agents_come_move_and_go() {
        let mut l = Ledger::default();
        let scan =
            |l: &Ledger, g: &str| -> Vec<AgentId> { l.agents.iter().filter(|(_, e)| e.spec.group == g).map(|(i, _)| i.clone()).collect() };
        let groups = ["standard_agent", "lightweight_agent", "heavy_computation_agent"];
        for i in 0..30 {
            l.register(AgentSpec::new(id(&format!("a{i:02}")), groups[i % 3])).unwrap();
        }
        l.update_agent(AgentSpec::new(id("a00"), "heavy_computation_agent")).unwrap();
        l.update_agent(AgentSpec::new(id("a04"), "lightweight_agent")).unwrap();
        for i in [1, 2, 7, 29] {
            l.unregister(&id(&format!("a{i:02}"))).unwrap();
        }
        for g in groups {
            let indexed: Vec<AgentId> = l.members(g).cloned().collect();
            assert_eq!(indexed, scan(&l, g), "{g}");
            assert_eq!(l.member_count(g), indexed.len(), "{g}");
        }
        assert_eq!(l.member_count("heavy_computation_agent"), 9, "ten, a00 moved in, a02 and a29 left");
        for i in 0..30 {
            let _ = l.unregister(&id(&format!("a{i:02}")));
        }
        assert!(groups.iter().all(|g| l.member_count(g) == 0 && l.members(g).next().is_none()));
    }

    #[test]
    fn register_rejects_unknown_groups_duplicates_and_bad_overrides() {
        let mut l = Ledger::default();
        let e = l.register(AgentSpec::new(id("a"), "nope")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown quota group \"nope\": known groups are heavy_computation_agent, lightweight_agent, standard_agent"
        );
        l.register(AgentSpec::new(id("a"), "standard_agent")).unwrap();
        assert_eq!(l.register(AgentSpec::new(id("a"), "standard_agent")).unwrap_err(), LedgerError::DuplicateAgent(id("a")));
        let spec = with_memory("b", "standard_agent", LimitOverride { soft: Some(900_000_000), ..Default::default() });
        let e = l.register(spec).unwrap_err();
        assert!(e.to_string().contains("agents.b.limits.memory: soft (900M) must not exceed hard"), "{e}");
        assert_eq!(l.agents().count(), 1);
        l.unregister(&id("a")).unwrap();
        assert_eq!(l.unregister(&id("a")).unwrap_err(), LedgerError::UnknownAgent(id("a")));
    }

    #[test]
    fn compliance_distinguishes_soft_burst_and_hard() {
        let mut l = Ledger::default();
        l.register(with_memory("a", "lightweight_agent", LimitOverride { burst: Some(150_000_000), ..Default::default() })).unwrap();
        let t = Time::from_secs(100);
        let a = l.record(&id("a"), Resource::Memory, 40_000_000, t).unwrap();
        assert_eq!(a.violation, None);
        let a = l.record(&id("a"), Resource::Memory, 60_000_000, t).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Soft);
        let a = l.record(&id("a"), Resource::Memory, 120_000_000, t).unwrap();
        assert_eq!(a.violation.as_ref().unwrap().kind, ViolationKind::Burst);
        assert_eq!(a.violation.unwrap().limit, 100_000_000);
        // Still in the burst zone at the end of the 30 s window, hard after it.
        let a = l.record(&id("a"), Resource::Memory, 120_000_000, t.plus(Duration::from_secs(30))).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Burst);
        let a = l.record(&id("a"), Resource::Memory, 120_000_000, t.plus(Duration::from_secs(31))).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Hard);
        // Dropping under hard resets the window.
        l.record(&id("a"), Resource::Memory, 90_000_000, t.plus(Duration::from_secs(32))).unwrap();
        let a = l.record(&id("a"), Resource::Memory, 120_000_000, t.plus(Duration::from_secs(33))).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Burst);
        // Above burst is hard at once.
        let a = l.record(&id("a"), Resource::Memory, 150_000_001, t.plus(Duration::from_secs(34))).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Hard);
        // check() reads the same verdicts without recording.
        l.record(&id("a"), Resource::Cpu, 70, t).unwrap();
        assert_eq!(
            kinds(&l.check(&id("a"), t.plus(Duration::from_secs(34))).unwrap()),
            [(Resource::Memory, ViolationKind::Hard), (Resource::Cpu, ViolationKind::Soft)]
        );
    }

    #[test]
    fn eviction_takes_lowest_priority_then_largest_excess() {
        let c = [(id("vip"), 9, 1_000_000), (id("small"), 2, 10), (id("big"), 2, 5000), (id("mid"), 5, 0)];
        assert_eq!(eviction_order(&c), [id("big"), id("small"), id("mid"), id("vip")]);
    }

    #[test]
    fn without_a_burst_above_hard_is_hard_at_once() {
        let mut l = Ledger::default();
        l.register(AgentSpec::new(id("a"), "standard_agent")).unwrap();
        let a = l.record(&id("a"), Resource::Cpu, 301, Time::ZERO).unwrap();
        assert_eq!(a.violation.unwrap().kind, ViolationKind::Hard);
        let a = l.record(&id("a"), Resource::Files, 1_000_000, Time::ZERO).unwrap();
        assert_eq!(a.violation, None, "no limit, no violation");
    }

    #[test]
    fn group_totals_sum_members_and_are_checked() {
        let mut l = Ledger::default();
        for i in 0..3 {
            l.register(AgentSpec::new(id(&format!("a{i}")), "lightweight_agent")).unwrap();
            l.record(&id(&format!("a{i}")), Resource::Cpu, 800, Time::ZERO).unwrap();
        }
        l.register(AgentSpec::new(id("other"), "standard_agent")).unwrap();
        l.record(&id("other"), Resource::Cpu, 5000, Time::ZERO).unwrap();
        assert_eq!(l.group_usage("lightweight_agent")[&Resource::Cpu], 2400);
        let v = l.group_violations("lightweight_agent").unwrap();
        assert_eq!(v, [GroupViolation { group: "lightweight_agent".into(), resource: Resource::Cpu, usage: 2400, total: 2000 }]);
        assert!(l.group_violations("standard_agent").unwrap().is_empty());
        assert_eq!(l.total_usage()[&Resource::Cpu], 7400);
        assert_eq!(l.remove_group("lightweight_agent").unwrap_err().to_string(), "quota group \"lightweight_agent\" still has 3 member(s)");
    }

    #[test]
    fn changing_a_group_re_resolves_members_or_changes_nothing() {
        let mut l = Ledger::default();
        l.register(with_memory("a", "standard_agent", LimitOverride { soft: Some(400_000_000), ..Default::default() })).unwrap();
        let mut g = l.group("standard_agent").unwrap().clone();
        let cpu = g.limits.get_mut(&Resource::Cpu).unwrap();
        cpu.hard = 500;
        let e = l.set_group(g.clone()).unwrap_err();
        assert!(e.to_string().contains("groups.standard_agent.limits.cpu: hard (500m) must not exceed burst (300m)"), "{e}");
        g.limits.get_mut(&Resource::Cpu).unwrap().burst = 500;
        l.set_group(g.clone()).unwrap();
        assert_eq!(l.quota(&id("a")).unwrap().limits[&Resource::Cpu].hard, 500);
        // A hard below the member's soft override would break the member: refused whole.
        g.limits.get_mut(&Resource::Memory).unwrap().hard = 300_000_000;
        g.limits.get_mut(&Resource::Memory).unwrap().burst = 300_000_000;
        assert!(l.set_group(g).is_err());
        assert_eq!(l.quota(&id("a")).unwrap().limits[&Resource::Cpu].hard, 500);
    }
}
