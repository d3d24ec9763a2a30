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
use std::collections::BTreeMap;
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
}

impl Policy {
    /// A policy with the given configuration.
    pub fn new(config: PolicyConfig) -> Self {
        Policy { config, agents: BTreeMap::new() }
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
        out
    }

    /// The earliest time a timer falls due.
    pub fn next_due(&self) -> Option<Time> {
        self.agents
            .values()
            .filter(|a| !a.terminated)
            .flat_map(|a| a.resources.values())
            .filter_map(|s| s.next_due(&self.config).map(|(t, _)| t))
            .min()
    }

    /// Fire every timer due at or before `now`, in time order.
    pub fn advance(&mut self, now: Time) -> Vec<Decision> {
        let mut out = Vec::new();
        loop {
            let next = self
                .agents
                .iter()
                .filter(|(_, a)| !a.terminated)
                .flat_map(|(id, a)| a.resources.iter().map(move |(r, s)| (id, r, s)))
                .filter_map(|(id, r, s)| s.next_due(&self.config).map(|(t, _)| (t, id.clone(), r.clone())))
                .filter(|(t, _, _)| *t <= now)
                .min_by(|a, b| a.0.cmp(&b.0));
            let Some((due, id, resource)) = next else {
                break;
            };
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
        out
    }
}
