//! The state machine of one agent's resource: violation episodes, pending
//! escalations, scale-down requests, throttle and suspension holds, and
//! their timers (escalation, scale-down deadline, restore, recovery stage).

use super::{DecisionKind, Hold, PolicyConfig, throttle_factor};
use crate::degradation::Degradation;
use crate::ledger::{Assessment, Violation, ViolationKind};
use crate::limits::{Action, Limit};
use crate::resource::Resource;
use crate::time::Time;

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Pending {
    pub(super) action: Action,
    pub(super) due: Time,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct ScaleDownRequest {
    target: u64,
    deadline: Time,
}

/// A violation episode: from the first violation until the resource has had
/// none for the recovery dwell.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Episode {
    pub(super) worst: ViolationKind,
    pub(super) clear_since: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ResourceState {
    pub(super) limit: Option<Limit>,
    pub(super) usage: u64,
    pub(super) violation: Option<Violation>,
    pub(super) episode: Option<Episode>,
    pub(super) pending: Option<Pending>,
    pub(super) scale_down: Option<ScaleDownRequest>,
    pub(super) throttled: Option<f64>,
    pub(super) suspended: bool,
    pub(super) healthy_since: Option<Time>,
    degradation: Degradation,
}

pub(super) enum PolicyTimer {
    Pending,
    ScaleDownDeadline,
    Restore,
    RecoveryStage,
}

impl ResourceState {
    fn holds(&self) -> bool {
        self.throttled.is_some() || self.suspended
    }

    pub(super) fn next_due(&self, cfg: &PolicyConfig) -> Option<(Time, PolicyTimer)> {
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

    pub(super) fn fire(
        &mut self,
        timer: PolicyTimer,
        due: Time,
        resource: &Resource,
        cfg: &PolicyConfig,
        out: &mut Vec<(Time, DecisionKind)>,
    ) {
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

    pub(super) fn observe(&mut self, a: &Assessment, cfg: &PolicyConfig, out: &mut Vec<(Time, DecisionKind)>) {
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
