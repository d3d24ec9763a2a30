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

use crate::degradation::{Degradation, DegradationEvent, RecoveryTiming};
use crate::ledger::{Assessment, Violation, ViolationKind};
use crate::limits::{Action, Limit};
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
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

/// A throttle never allows more than this share (per mille) of the soft limit.
pub const THROTTLE_HEADROOM_PERMILLE: u64 = 900;

/// The value a throttle of a resource writes (a cpu limit in millicores,
/// `memory.high` in bytes): `factor` x current use, of at most the hard
/// limit, and never above 90 % of the soft limit
/// ([`THROTTLE_HEADROOM_PERMILLE`]), so that a throttled agent settles under
/// its soft limit with headroom instead of hovering on it; at least `floor`.
/// Without a limit for the resource it is `factor` x current use.
pub fn throttle_target(factor: f64, usage: u64, limit: Option<&Limit>, floor: u64) -> u64 {
    let base = limit.map_or(usage, |l| usage.min(l.hard));
    let mut target = (base as f64 * factor.clamp(0.0, 1.0)) as u64;
    if let Some(l) = limit {
        target = target.min((u128::from(l.soft) * u128::from(THROTTLE_HEADROOM_PERMILLE) / 1000) as u64);
    }
    target.max(floor)
}

/// The throttle factor for usage over a limit (SPEC section 7).
pub fn throttle_factor(usage: u64, limit: u64) -> f64 {
    if limit == 0 {
        return 0.5;
    }
    let excess = (usage as f64 - limit as f64) / limit as f64;
    if excess > 1.0 {
        0.5
    } else if excess > 0.5 {
        0.7
    } else if excess > 0.2 {
        0.85
    } else {
        0.9
    }
}

/// What a throttle or suspension holds, for restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// A throttle on this resource.
    Throttle,
    /// A suspension of the agent.
    Suspend,
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionKind {
    /// Log and publish: a violation started.
    Warn {
        /// The violation.
        violation: Violation,
    },
    /// An action will follow after its escalation delay unless the violation clears.
    Scheduled {
        /// The action.
        action: Action,
        /// When it is due.
        due: Time,
    },
    /// A scheduled action was cancelled because its violation cleared.
    CancelPending {
        /// The action.
        action: Action,
        /// The usage that cleared it.
        usage: u64,
    },
    /// Lower the agent's share of the resource by `factor`.
    Throttle {
        /// Factor of current use to allow (0.5..0.9).
        factor: f64,
        /// The violation.
        violation: Violation,
        /// True when this throttle only bridges the wait for a stronger action.
        interim: bool,
    },
    /// Freeze the agent's whole tree.
    Suspend {
        /// The violation.
        violation: Violation,
        /// True when an unmet scale-down request escalated to this.
        after_scale_down: bool,
    },
    /// Notice, wait `grace`, kill the tree, unregister.
    Terminate {
        /// Grace between notice and kill.
        grace: Duration,
        /// The violation.
        violation: Violation,
    },
    /// Ask the agent to bring usage under `target` by `deadline`.
    ScaleDown {
        /// Target usage.
        target: u64,
        /// Deadline.
        deadline: Time,
        /// The violation.
        violation: Violation,
    },
    /// Measured usage went under the scale-down target before the deadline.
    ScaleDownMet {
        /// The target.
        target: u64,
        /// The usage measured.
        usage: u64,
    },
    /// Restart the agent elsewhere (suspend where no node has room).
    Migrate {
        /// The violation.
        violation: Violation,
    },
    /// Run the configured custom handler.
    Custom {
        /// The violation.
        violation: Violation,
    },
    /// A violation episode ended: no violation for the recovery dwell.
    Cleared {
        /// The worst violation of the episode.
        worst: ViolationKind,
        /// The usage that ended it.
        usage: u64,
    },
    /// Lift a throttle or suspension after healthy usage for the dwell time.
    Restore {
        /// What is lifted.
        from: Hold,
    },
    /// A degradation plan, recovery stage or rollback.
    Degradation {
        /// What happened.
        event: DegradationEvent,
    },
}

impl DecisionKind {
    /// The action name used in event topics (`resource_management.enforcement.<name>`),
    /// or `None` for degradation decisions.
    pub fn action_name(&self) -> Option<&'static str> {
        Some(match self {
            DecisionKind::Warn { .. } => "warn",
            DecisionKind::Scheduled { .. } => "scheduled",
            DecisionKind::CancelPending { .. } => "cancelled",
            DecisionKind::Throttle { .. } => "throttle",
            DecisionKind::Suspend { .. } => "suspend",
            DecisionKind::Terminate { .. } => "terminate",
            DecisionKind::ScaleDown { .. } => "scale_down",
            DecisionKind::ScaleDownMet { .. } => "scale_down_met",
            DecisionKind::Migrate { .. } => "migrate",
            DecisionKind::Custom { .. } => "custom",
            DecisionKind::Restore { .. } => "restore",
            DecisionKind::Cleared { .. } => "cleared",
            DecisionKind::Degradation { .. } => return None,
        })
    }
}

/// A decision about one agent and resource, effective at `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When it takes effect (an observation's time or a timer's due time).
    pub at: Time,
    /// The agent.
    pub agent: AgentId,
    /// The resource whose limit caused it.
    pub resource: Resource,
    /// What to do.
    #[serde(flatten)]
    pub kind: DecisionKind,
}

#[derive(Clone, Debug, PartialEq)]
struct Pending {
    action: Action,
    due: Time,
}

#[derive(Clone, Debug, PartialEq)]
struct ScaleDownRequest {
    target: u64,
    deadline: Time,
}

/// A violation episode: from the first violation until the resource has had
/// none for the recovery dwell.
#[derive(Clone, Debug, PartialEq)]
struct Episode {
    worst: ViolationKind,
    clear_since: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ResourceState {
    limit: Option<Limit>,
    usage: u64,
    violation: Option<Violation>,
    episode: Option<Episode>,
    pending: Option<Pending>,
    scale_down: Option<ScaleDownRequest>,
    throttled: Option<f64>,
    suspended: bool,
    healthy_since: Option<Time>,
    degradation: Degradation,
}

enum PolicyTimer {
    Pending,
    ScaleDownDeadline,
    Restore,
    RecoveryStage,
}

impl ResourceState {
    fn holds(&self) -> bool {
        self.throttled.is_some() || self.suspended
    }

    fn next_due(&self, cfg: &PolicyConfig) -> Option<(Time, PolicyTimer)> {
        let mut timers: Vec<(Time, PolicyTimer)> = Vec::new();
        if let Some(p) = &self.pending {
            timers.push((p.due, PolicyTimer::Pending));
        }
        if let Some(s) = &self.scale_down {
            timers.push((s.deadline, PolicyTimer::ScaleDownDeadline));
        }
        if let (true, Some(since)) = (self.holds(), self.healthy_since) {
            timers.push((since.plus(cfg.recovery.dwell), PolicyTimer::Restore));
        }
        if let Some(due) = self.degradation.next_stage_due(self.healthy_since, cfg.recovery) {
            timers.push((due, PolicyTimer::RecoveryStage));
        }
        timers.into_iter().min_by_key(|(t, _)| *t)
    }

    fn current_violation(&self, resource: &Resource) -> Violation {
        self.violation.clone().unwrap_or_else(|| Violation {
            kind: ViolationKind::Hard,
            resource: resource.clone(),
            usage: self.usage,
            limit: self.limit.as_ref().map_or(0, |l| l.hard),
        })
    }

    /// Carry out `action` at `at`, pushing what it decides.
    fn take_action(&mut self, action: Action, resource: &Resource, at: Time, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) {
        let violation = self.current_violation(resource);
        let hard = self.limit.as_ref().map_or(0, |l| l.hard);
        match action {
            Action::Warn => {}
            Action::Throttle => {
                // Recorded even when a burst throttle already holds at least as tight.
                let computed = throttle_factor(violation.usage, hard);
                let factor = self.throttled.map_or(computed, |f| f.min(computed));
                self.throttled = Some(factor);
                out.push((at, DecisionKind::Throttle { factor, violation, interim: false }));
            }
            Action::Suspend => {
                self.suspended = true;
                out.push((at, DecisionKind::Suspend { violation, after_scale_down: false }));
            }
            Action::Terminate => out.push((at, DecisionKind::Terminate { grace: cfg.terminate_grace, violation })),
            Action::ScaleDown => {
                let target = cfg.target(hard);
                let deadline = at.plus(cfg.scale_down_deadline);
                self.scale_down = Some(ScaleDownRequest { target, deadline });
                out.push((at, DecisionKind::ScaleDown { target, deadline, violation }));
            }
            Action::Migrate => {
                self.suspended = true;
                out.push((at, DecisionKind::Migrate { violation }));
            }
            Action::Custom => out.push((at, DecisionKind::Custom { violation })),
        }
    }

    fn throttle(&mut self, violation: Violation, hard: u64, interim: bool, at: Time, out: &mut Vec<(Time, DecisionKind)>) {
        let factor = throttle_factor(violation.usage, hard);
        if self.throttled.is_none_or(|f| factor < f) {
            self.throttled = Some(factor);
            out.push((at, DecisionKind::Throttle { factor, violation, interim }));
        }
    }

    fn fire(&mut self, timer: PolicyTimer, due: Time, resource: &Resource, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) {
        match timer {
            PolicyTimer::Pending => {
                if let Some(p) = self.pending.take() {
                    self.take_action(p.action, resource, due, cfg, out);
                }
            }
            PolicyTimer::ScaleDownDeadline => {
                self.scale_down = None;
                // Met requests were cleared when the usage was observed; this one is unmet.
                if !self.suspended {
                    self.suspended = true;
                    let violation = self.current_violation(resource);
                    out.push((due, DecisionKind::Suspend { violation, after_scale_down: true }));
                }
            }
            PolicyTimer::Restore => {
                if self.throttled.take().is_some() {
                    out.push((due, DecisionKind::Restore { from: Hold::Throttle }));
                }
                if std::mem::take(&mut self.suspended) {
                    out.push((due, DecisionKind::Restore { from: Hold::Suspend }));
                }
            }
            PolicyTimer::RecoveryStage => {
                if let Some(event) = self.degradation.advance() {
                    out.push((due, DecisionKind::Degradation { event }));
                }
            }
        }
    }

    /// The episode's warnings: at its start, at each escalation, and
    /// `Cleared` once the resource has had no violation for the recovery dwell.
    /// Returns whether it warned.
    fn episode_step(&mut self, a: &Assessment, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) -> bool {
        match (&a.violation, &mut self.episode) {
            (Some(v), None) => {
                self.episode = Some(Episode { worst: v.kind, clear_since: None });
                out.push((a.at, DecisionKind::Warn { violation: v.clone() }));
                return true;
            }
            (Some(v), Some(e)) => {
                e.clear_since = None;
                if v.kind > e.worst {
                    e.worst = v.kind;
                    out.push((a.at, DecisionKind::Warn { violation: v.clone() }));
                    return true;
                }
            }
            (None, Some(e)) => {
                let since = *e.clear_since.get_or_insert(a.at);
                if a.at >= since.plus(cfg.recovery.dwell) {
                    out.push((a.at, DecisionKind::Cleared { worst: e.worst, usage: a.usage }));
                    self.episode = None;
                }
            }
            (None, None) => {}
        }
        false
    }

    fn advance(&mut self, now: Time, resource: &Resource, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) {
        while let Some((due, timer)) = self.next_due(cfg) {
            if due > now {
                break;
            }
            self.fire(timer, due, resource, cfg, out);
        }
    }

    fn observe(&mut self, a: &Assessment, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) {
        let at = a.at;
        self.advance(at, &a.resource, cfg, out);
        self.usage = a.usage;
        self.limit = a.limit.clone();
        let Some(limit) = a.limit.clone() else {
            return;
        };
        let previous = self.violation.as_ref().map(|v| v.kind);
        let now_kind = a.violation.as_ref().map(|v| v.kind);
        self.violation = a.violation.clone();

        if let Some(req) = &self.scale_down {
            if a.usage < req.target {
                out.push((at, DecisionKind::ScaleDownMet { target: req.target, usage: a.usage }));
                self.scale_down = None;
            }
        }

        let warned = self.episode_step(a, cfg, out);
        match (&a.violation, now_kind) {
            (Some(v), Some(ViolationKind::Hard)) => {
                if previous != Some(ViolationKind::Hard) {
                    if self.pending.is_none() && limit.action != Action::Warn {
                        if !warned {
                            // A new escalation within the episode (the last one was cancelled): warned again.
                            out.push((at, DecisionKind::Warn { violation: v.clone() }));
                        }
                        let delay = cfg.delay(limit.action);
                        if delay.is_zero() {
                            self.take_action(limit.action, &a.resource, at, cfg, out);
                        } else {
                            let due = at.plus(delay);
                            self.pending = Some(Pending { action: limit.action, due });
                            out.push((at, DecisionKind::Scheduled { action: limit.action, due }));
                            if limit.action.stronger_than_throttle() {
                                self.throttle(v.clone(), limit.hard, true, at, out);
                            }
                        }
                    }
                } else if self.throttled.is_some() {
                    self.throttle(v.clone(), limit.hard, false, at, out);
                }
            }
            (Some(v), Some(ViolationKind::Burst)) => {
                self.throttle(v.clone(), limit.hard, false, at, out);
            }
            _ => {
                if let Some(p) = self.pending.take() {
                    out.push((at, DecisionKind::CancelPending { action: p.action, usage: a.usage }));
                }
            }
        }

        let healthy = a.violation.is_none() && u128::from(a.usage) * 1000 < u128::from(limit.hard) * u128::from(cfg.target_permille);
        if healthy {
            self.healthy_since.get_or_insert(at);
        } else {
            self.healthy_since = None;
        }
        if let Some(event) = self.degradation.observe(&a.resource, a.usage, limit.hard, a.violation.is_some()) {
            out.push((at, DecisionKind::Degradation { event }));
        }
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
