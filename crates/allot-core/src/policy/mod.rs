//! The enforcement policy (SPEC section 7) as a pure state machine per agent
//! and resource.
//!
//! Input: assessments from the ledger (usage with its verdict, at a time).
//! Output: [`Decision`]s stamped with the time they take effect. Timers
//! (escalation delays, scale-down deadlines, recovery dwell, recovery stages)
//! are explicit: [`Policy::next_due`] says when the next one is due and
//! [`Policy::advance`] fires those due by a time. [`Policy::observe`] fires
//! due timers first, so the decisions depend only on the observations and
//! their times, never on how often the caller polls.
//!
//! The timers are indexed: every change to an agent's state updates its
//! resources' entries in one ordered set of (due, agent, resource), so
//! [`Policy::next_due`] and each observation cost O(log n) in the number of
//! agents and resources, not a scan of all of them (which made a tick over
//! 1,000 agents quadratic: 300 ms).
//!
//! Warnings are per violation *episode*: a warning when a violation starts,
//! one when it escalates (soft to burst to hard), and a `Cleared` decision
//! when the resource has had no violation for the recovery dwell. Usage that
//! hovers on a limit is one episode, not a warning per sample.

mod decision;
mod state;
mod throttle;

pub use decision::{Decision, DecisionKind, Hold};
pub use throttle::{THROTTLE_HEADROOM_PERMILLE, throttle_factor, throttle_target};

use crate::degradation::RecoveryTiming;
use crate::ledger::{Assessment, ViolationKind};
use crate::limits::Action;
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use state::{Episode, Pending, ResourceState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Escalation delays and other timings (SPEC section 7 defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Delay before each action follows a hard violation.
    pub delays: BTreeMap<Action, Duration>,
    /// Grace between the termination notice and the kill.
    pub terminate_grace: Duration,
    /// Time a scale-down request gives the agent.
    pub scale_down_deadline: Duration,
    /// Scale-down target and recovery threshold, in thousandths of the hard limit (800).
    pub target_permille: u64,
    /// Recovery timing: healthy dwell before restore and between stages.
    pub recovery: RecoveryTiming,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            delays: BTreeMap::from([
                (Action::Throttle, Duration::from_secs(30)),
                (Action::Suspend, Duration::from_secs(300)),
                (Action::Terminate, Duration::from_secs(600)),
            ]),
            terminate_grace: Duration::from_secs(5),
            scale_down_deadline: Duration::from_secs(30),
            target_permille: 800,
            recovery: RecoveryTiming::default(),
        }
    }
}

impl PolicyConfig {
    /// The escalation delay for an action (zero unless configured).
    pub fn delay(&self, action: Action) -> Duration {
        self.delays.get(&action).copied().unwrap_or(Duration::ZERO)
    }

    fn target(&self, hard: u64) -> u64 {
        (u128::from(hard) * u128::from(self.target_permille) / 1000) as u64
    }
}

#[derive(Clone, Debug, Default)]
struct AgentPolicy {
    resources: BTreeMap<Resource, ResourceState>,
    terminated: bool,
}

impl AgentPolicy {
    /// Apply agent-wide rules to one resource's decisions: a restore from
    /// suspension waits for every resource that holds the agent suspended, and
    /// nothing follows a terminate. A second suspension is passed on and
    /// recorded: freezing a frozen agent changes nothing.
    fn settle(&mut self, agent: &AgentId, resource: &Resource, raw: Vec<(Time, DecisionKind)>, out: &mut Vec<Decision>) {
        for (at, kind) in raw {
            if self.terminated {
                break;
            }
            match &kind {
                DecisionKind::Restore { from: Hold::Suspend } => {
                    let others = self.resources.iter().any(|(r, s)| r != resource && s.suspended);
                    if others {
                        continue;
                    }
                }
                DecisionKind::Terminate { .. } => self.terminated = true,
                _ => {}
            }
            out.push(Decision { at, agent: agent.clone(), resource: resource.clone(), kind });
        }
    }
}

/// The enforcement policy for every agent.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    config: PolicyConfig,
    agents: BTreeMap<AgentId, AgentPolicy>,
    /// Every timer: (due, agent, resource), for each resource of an agent
    /// not terminated whose state has one (its earliest).
    timers: BTreeSet<(Time, AgentId, Resource)>,
    /// Each agent's entries in `timers`.
    due_of: BTreeMap<AgentId, Vec<(Time, Resource)>>,
}

impl Policy {
    /// A policy with the given configuration.
    pub fn new(config: PolicyConfig) -> Self {
        Policy { config, agents: BTreeMap::new(), timers: BTreeSet::new(), due_of: BTreeMap::new() }
    }

    /// Bring the timer index up to date with an agent's state (after any change to it).
    fn reindex(&mut self, agent: &AgentId) {
        for (t, r) in self.due_of.remove(agent).unwrap_or_default() {
            self.timers.remove(&(t, agent.clone(), r));
        }
        let Some(a) = self.agents.get(agent).filter(|a| !a.terminated) else { return };
        let due: Vec<(Time, Resource)> =
            a.resources.iter().filter_map(|(r, s)| s.next_due(&self.config).map(|(t, _)| (t, r.clone()))).collect();
        for (t, r) in &due {
            self.timers.insert((*t, agent.clone(), r.clone()));
        }
        if !due.is_empty() {
            self.due_of.insert(agent.clone(), due);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Feed one assessment; returns the decisions it causes, including those of
    /// timers that fell due before it.
    pub fn observe(&mut self, a: &Assessment) -> Vec<Decision> {
        let mut out = self.advance(a.at);
        let agent = self.agents.entry(a.agent.clone()).or_default();
        if agent.terminated {
            return out;
        }
        let mut raw = Vec::new();
        let state = agent.resources.entry(a.resource.clone()).or_default();
        state.observe(a, &self.config, &mut raw);
        agent.settle(&a.agent, &a.resource, raw, &mut out);
        self.reindex(&a.agent);
        out
    }

    /// The earliest time a timer falls due.
    pub fn next_due(&self) -> Option<Time> {
        self.timers.first().map(|(t, _, _)| *t)
    }

    /// Fire every timer due at or before `now`, in time order (the same
    /// time: in the order of agent and resource).
    pub fn advance(&mut self, now: Time) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some((due, id, resource)) = self.timers.first().filter(|(t, _, _)| *t <= now).cloned() {
            let Some(agent) = self.agents.get_mut(&id) else {
                break;
            };
            let mut raw = Vec::new();
            if let Some(state) = agent.resources.get_mut(&resource) {
                if let Some((_, timer)) = state.next_due(&self.config) {
                    state.fire(timer, due, &resource, &self.config, &mut raw);
                }
            }
            agent.settle(&id, &resource, raw, &mut out);
            self.reindex(&id);
        }
        out
    }

    /// Resume an escalation a previous governor scheduled and neither carried
    /// out nor cancelled (after a restart), at the first fresh assessment of
    /// its resource, before that assessment is observed: while the hard
    /// violation holds, `action` stays due at `due` (carried out by the
    /// observation when `due` has passed) and the violation is not a new
    /// episode (no second warning, no new delay); when it has cleared, the
    /// escalation is cancelled (the decision is returned). Nothing changes
    /// when one is pending there already.
    pub fn restore_pending(&mut self, a: &Assessment, action: Action, due: Time) -> Option<Decision> {
        let state = self.agents.entry(a.agent.clone()).or_default().resources.entry(a.resource.clone()).or_default();
        if state.pending.is_some() || action == Action::Warn {
            return None;
        }
        match &a.violation {
            Some(v) if v.kind == ViolationKind::Hard => {
                state.limit = a.limit.clone();
                state.usage = a.usage;
                state.violation = Some(v.clone());
                state.episode = Some(Episode { worst: v.kind, clear_since: None });
                state.pending = Some(Pending { action, due });
                self.reindex(&a.agent);
                None
            }
            _ => Some(Decision {
                at: a.at,
                agent: a.agent.clone(),
                resource: a.resource.clone(),
                kind: DecisionKind::CancelPending { action, usage: a.usage },
            }),
        }
    }

    /// The escalations scheduled for an agent and not yet carried out nor
    /// cancelled: per resource, the action and when it falls due.
    pub fn pending(&self, agent: &AgentId) -> BTreeMap<Resource, (Action, Time)> {
        self.agents
            .get(agent)
            .filter(|a| !a.terminated)
            .map(|a| a.resources.iter().filter_map(|(r, s)| s.pending.as_ref().map(|p| (r.clone(), (p.action, p.due)))).collect())
            .unwrap_or_default()
    }

    /// Forget an agent (after it exits or is unregistered).
    pub fn remove(&mut self, agent: &AgentId) {
        self.agents.remove(agent);
        self.reindex(agent);
    }

    /// Lift every hold on an agent by operator command (a forced resume) and
    /// forget its violations, so that one still present starts a new episode
    /// (warn, delay, action); returns the restores.
    pub fn resume(&mut self, agent: &AgentId, now: Time) -> Vec<Decision> {
        let mut out = Vec::new();
        if let Some(a) = self.agents.get_mut(agent) {
            let mut suspended_by = None;
            for (r, s) in &mut a.resources {
                s.pending = None;
                s.scale_down = None;
                // A violation still present is a new episode: warned and escalated again.
                s.violation = None;
                s.episode = None;
                s.healthy_since = None;
                if s.throttled.take().is_some() {
                    out.push(Decision {
                        at: now,
                        agent: agent.clone(),
                        resource: r.clone(),
                        kind: DecisionKind::Restore { from: Hold::Throttle },
                    });
                }
                if std::mem::take(&mut s.suspended) && suspended_by.is_none() {
                    suspended_by = Some(r.clone());
                }
            }
            if let Some(resource) = suspended_by {
                out.push(Decision { at: now, agent: agent.clone(), resource, kind: DecisionKind::Restore { from: Hold::Suspend } });
            }
        }
        self.reindex(agent);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    //! The timer index always equals what a scan of every state gives.

    use super::*;
    use crate::ledger::Ledger;
    use crate::limits::LimitOverride;
    use crate::quota::AgentSpec;
    use proptest::prelude::*;

    /// Every timer, by scanning every state (what the index replaces).
    fn scanned(p: &Policy) -> BTreeSet<(Time, AgentId, Resource)> {
        p.agents
            .iter()
            .filter(|(_, a)| !a.terminated)
            .flat_map(|(id, a)| a.resources.iter().map(move |(r, s)| (id, r, s)))
            .filter_map(|(id, r, s)| s.next_due(&p.config).map(|(t, _)| (t, id.clone(), r.clone())))
            .collect()
    }

    const RES: [Resource; 2] = [Resource::Memory, Resource::Cpu];

    #[derive(Clone, Debug)]
    enum Op {
        Observe { agent: usize, res: usize, pct: u64 },
        Advance,
        Resume(usize),
        Remove(usize),
        RestorePending { agent: usize, res: usize, pct: u64, action: Action, ahead: u64 },
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        let pct = prop_oneof![0u64..60, 60u64..130, 130u64..300];
        let action = prop::sample::select(crate::limits::ACTIONS.to_vec());
        let op = prop_oneof![
            8 => (0usize..3, 0usize..2, pct.clone()).prop_map(|(agent, res, pct)| Op::Observe { agent, res, pct }),
            2 => Just(Op::Advance),
            1 => (0usize..3).prop_map(Op::Resume),
            1 => (0usize..3).prop_map(Op::Remove),
            1 => (0usize..3, 0usize..2, pct, action, 0u64..10).prop_map(|(agent, res, pct, action, ahead)| Op::RestorePending { agent, res, pct, action, ahead }),
        ];
        (op, 0u64..4000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn the_timer_index_is_the_scan_of_every_state(ops in prop::collection::vec(op(), 1..150)) {
            let secs = Duration::from_secs;
            let config = PolicyConfig {
                delays: BTreeMap::from([(Action::Throttle, secs(3)), (Action::Suspend, secs(5)), (Action::Terminate, secs(7))]),
                terminate_grace: secs(1),
                scale_down_deadline: secs(4),
                recovery: RecoveryTiming { dwell: secs(6), stage_interval: secs(3) },
                ..PolicyConfig::default()
            };
            let ids: Vec<AgentId> = (0..3).map(|i| AgentId::new(format!("a{i}")).unwrap()).collect();
            let mut ledger = Ledger::default();
            for (i, id) in ids.iter().enumerate() {
                let mut spec = AgentSpec::new(id.clone(), "standard_agent");
                let action = crate::limits::ACTIONS[i % crate::limits::ACTIONS.len()];
                spec.overrides = RES
                    .iter()
                    .map(|r| (r.clone(), LimitOverride { soft: Some(500), hard: Some(1000), burst: Some(1500), action: Some(action), ..Default::default() }))
                    .collect();
                spec.custom_handler = Some(crate::group::CustomHandler::Command(vec!["true".into()]));
                ledger.register(spec).unwrap();
            }
            let mut policy = Policy::new(config);
            let mut t = 0u64;
            for (op, dt) in ops {
                t += dt;
                let now = Time::from_millis(t);
                match op {
                    Op::Observe { agent, res, pct } => {
                        let a = ledger.record(&ids[agent], RES[res].clone(), pct * 10, now).unwrap();
                        policy.observe(&a);
                    }
                    Op::Advance => {
                        let before = policy.next_due();
                        let ds = policy.advance(now);
                        prop_assert!(ds.iter().all(|d| d.at <= now), "only timers due by now fire");
                        prop_assert!(before.is_none_or(|b| b > now) || policy.next_due().is_none_or(|n| n > now), "every due timer fired");
                    }
                    Op::Resume(i) => {
                        policy.resume(&ids[i], now);
                    }
                    Op::Remove(i) => policy.remove(&ids[i]),
                    Op::RestorePending { agent, res, pct, action, ahead } => {
                        let a = ledger.record(&ids[agent], RES[res].clone(), pct * 10, now).unwrap();
                        policy.restore_pending(&a, action, now.plus(secs(ahead)));
                    }
                }
                let scan = scanned(&policy);
                prop_assert_eq!(&policy.timers, &scan);
                prop_assert_eq!(policy.next_due(), scan.first().map(|(t, _, _)| *t));
                let per_agent: usize = policy.due_of.values().map(Vec::len).sum();
                prop_assert_eq!(per_agent, scan.len());
            }
        }
    }
}
