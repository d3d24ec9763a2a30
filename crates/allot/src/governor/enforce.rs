//! Carrying out the policy's decisions: each becomes an intent with the
//! policy (for the resource at fault) as its source, or a message on the
//! agent channel; its real outcome is published and recorded.

use super::intent::{Applied, Intent, Op, Source};
use super::record::Enforcement;
use super::settle::Attempt;
use super::{Backend, Governor};
use crate::output::human;
use allot_core::degradation::DegradationEvent;
use allot_core::holds::Throttle;
use allot_core::policy::{Hold, throttle_target};
use allot_core::{Decision, DecisionKind, Resource, ViolationKind, events};
use allot_store::{Outcome, Stage};
use serde_json::{Value, json};

/// The smallest memory.high a throttle writes.
const MIN_MEMORY_HIGH: u64 = 1 << 20;
/// The smallest cpu limit a throttle writes, in millicores.
const MIN_CPU_LIMIT: u64 = 20;

impl<B: Backend> Governor<B> {
    pub(super) fn execute_all(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            self.execute(d);
        }
    }

    /// Carry out one decision.
    pub(super) fn execute(&mut self, d: Decision) {
        let _span = tracing::info_span!("agent", id = %d.agent).entered();
        let Some(a) = self.agents.get(&d.agent) else { return };
        let active = a.is_active();
        let source = Source::Policy(d.resource.clone());
        match &d.kind {
            DecisionKind::Warn { violation } => {
                let which = match violation.kind {
                    ViolationKind::Soft => "soft limit",
                    ViolationKind::Burst => "hard limit (within burst)",
                    ViolationKind::Hard => "hard limit",
                };
                let u = violation.resource.unit();
                let detail = format!("{} {} over {which} {}", violation.resource, human(u, violation.usage), human(u, violation.limit));
                self.record_decision(&d, "warn", Stage::Done, Outcome::Success, &detail);
            }
            DecisionKind::Scheduled { action, due } => {
                let detail = format!("{action} due at {} unless the violation clears", super::clock::rfc3339(*due));
                self.record_decision(&d, action.name(), Stage::Scheduled, Outcome::Success, &detail);
            }
            DecisionKind::CancelPending { action, usage } => {
                let detail = format!("violation cleared (usage {}) before the delay ended", human(d.resource.unit(), *usage));
                self.record_decision(&d, action.name(), Stage::Done, Outcome::Cancelled, &detail);
            }
            DecisionKind::ScaleDownMet { target, usage } => {
                let u = d.resource.unit();
                let detail = format!("met: measured {} < target {}", human(u, *usage), human(u, *target));
                self.record_decision(&d, "scale_down", Stage::Done, Outcome::Success, &detail);
            }
            DecisionKind::ScaleDown { target, deadline, .. } => {
                let msg = json!({"resource": d.resource.name(), "target": target, "deadline": super::clock::rfc3339(*deadline)});
                let (outcome, detail) = match self.send(&d, "scale_down", msg) {
                    Ok(sent) => {
                        let target = human(d.resource.unit(), *target);
                        (Outcome::Success, format!("request delivered: {sent}; met only if measured usage < {target} before the deadline"))
                    }
                    Err(e) => (Outcome::Failure, e),
                };
                self.record_decision(&d, "scale_down", Stage::Done, outcome, &detail);
            }
            DecisionKind::Degradation { event } => self.degradation(&d, event),
            DecisionKind::Custom { .. } => self.custom(&d),
            _ if !active => {}
            DecisionKind::Throttle { factor, interim, .. } => self.policy_throttle(&d, *factor, *interim),
            DecisionKind::Suspend { after_scale_down, .. } => {
                let _ = self.send(&d, "suspend", json!({"resource": d.resource.name()}));
                let why = if *after_scale_down { "scale_down unmet at its deadline; " } else { "" };
                let applied = self.apply(Intent { agent: d.agent.clone(), source, op: Op::Freeze });
                self.finish(&d, "suspend", applied, Outcome::Success, why);
            }
            DecisionKind::Migrate { violation } => {
                if let Err(why) = self.migrate_out(&d, violation.usage) {
                    self.migrate_fallback(&d, &why);
                }
            }
            DecisionKind::Terminate { grace, violation } => {
                let u = violation.resource.unit();
                let reason = format!(
                    "terminated by allot: {} at {} over hard limit {}",
                    violation.resource,
                    human(u, violation.usage),
                    human(u, violation.limit)
                );
                let applied = self.apply(Intent { agent: d.agent.clone(), source, op: Op::Terminate { grace: *grace, reason } });
                self.finish(&d, "terminate", applied, Outcome::Success, "");
            }
            DecisionKind::Cleared { worst, usage } => {
                let dwell = self.domain.policy.config().recovery.dwell.as_secs();
                let detail = format!(
                    "violation episode ended (worst: {}): usage {}, no violation for {dwell} s",
                    worst_name(*worst),
                    human(d.resource.unit(), *usage)
                );
                self.record_decision(&d, "cleared", Stage::Done, Outcome::Success, &detail);
            }
            DecisionKind::Restore { from: Hold::Throttle } if d.resource.is_custom() && self.unthrottle_budget(&d.agent, &d.resource) => {
                let _ = self.send(&d, "restore", json!({"from": Hold::Throttle, "resource": d.resource.name()}));
                let detail = format!("reservations of {} admitted again without a rate", d.resource);
                self.record_decision(&d, "restore", Stage::Done, Outcome::Success, &detail);
            }
            DecisionKind::Restore { from } => {
                let op = match from {
                    Hold::Throttle => Op::Unthrottle,
                    Hold::Suspend => Op::ThawPolicy,
                };
                let _ = self.send(&d, "restore", json!({"from": from, "resource": d.resource.name()}));
                let applied = self.apply(Intent { agent: d.agent.clone(), source, op });
                self.finish(&d, "restore", applied, Outcome::Success, "");
            }
        }
    }

    /// A message on the agent's channel (signalled to its leader where configured).
    fn send(&mut self, d: &Decision, kind: &str, msg: Value) -> Result<String, String> {
        let a = self.agents.get_mut(&d.agent).ok_or("no agent")?;
        let pid = a.pid();
        a.channel.send(kind, msg, d.at.as_millis(), pid)
    }

    /// The policy's throttle: memory.high for memory (a cpu limit where there is none), else a cpu limit.
    fn policy_throttle(&mut self, d: &Decision, factor: f64, interim: bool) {
        let Some(a) = self.agents.get(&d.agent) else { return };
        let usage_cpu = a.usage.get(&Resource::Cpu).copied().unwrap_or(0);
        let usage_res = a.usage.get(&d.resource).copied().unwrap_or(0);
        if d.resource.is_custom() {
            // A budget resource: the agent's reservations are admitted at a rate under its soft limit.
            let limit = self.domain.ledger.quota(&d.agent).and_then(|q| q.limits.get(&d.resource)).cloned();
            let target = throttle_target(factor, usage_res, limit.as_ref(), 1);
            if let Some(text) = self.throttle_budget(&d.agent, &d.resource, target) {
                let sent = self.send(d, "throttle", json!({"resource": d.resource.name(), "factor": factor, "interim": interim}));
                let detail = match sent {
                    Ok(s) => format!("factor {factor}: {text}; {s}"),
                    Err(_) => format!("factor {factor}: {text}"),
                };
                self.record_decision(d, "throttle", Stage::Done, Outcome::Success, &detail);
                return;
            }
        }
        let quota = self.domain.ledger.quota(&d.agent);
        let limit_of = |r: &Resource| quota.and_then(|q| q.limits.get(r));
        // The cpu limit: for a cpu violation factor x use, under 90 % of the soft limit
        // (settles below soft with headroom); for other resources factor x cpu use.
        let cpu = match d.resource {
            Resource::Cpu => throttle_target(factor, usage_cpu, limit_of(&Resource::Cpu), MIN_CPU_LIMIT),
            _ => throttle_target(factor, usage_cpu, None, MIN_CPU_LIMIT),
        };
        let op = if d.resource == Resource::Memory {
            let high = throttle_target(factor, usage_res, limit_of(&Resource::Memory), MIN_MEMORY_HIGH);
            Op::Throttle { want: Throttle { cpu_millicores: None, memory_high: Some(high) }, fallback_cpu: Some(cpu) }
        } else {
            Op::Throttle { want: Throttle { cpu_millicores: Some(cpu), memory_high: None }, fallback_cpu: None }
        };
        let applied = self.apply(Intent { agent: d.agent.clone(), source: Source::Policy(d.resource.clone()), op });
        let sent = self.send(d, "throttle", json!({"resource": d.resource.name(), "factor": factor, "interim": interim}));
        let applied = match applied {
            Applied::Now { outcome, detail, written } => {
                // Throttling anything but memory and cpu through the cpu limit is a fallback.
                let outcome = match outcome {
                    Outcome::Success if d.resource != Resource::Memory && d.resource != Resource::Cpu => Outcome::Fallback,
                    o => o,
                };
                let detail = match sent {
                    Ok(s) => format!("{detail}; {s}"),
                    Err(_) => detail,
                };
                Applied::Now { outcome, detail, written }
            }
            settling => settling,
        };
        self.finish(d, "throttle", applied, Outcome::Success, &format!("factor {factor}: "));
    }

    fn degradation(&mut self, d: &Decision, event: &DegradationEvent) {
        let (kind, topic) = match event {
            DegradationEvent::Plan { .. } | DegradationEvent::Rollback { .. } => ("degradation", events::DEGRADATION_PLAN),
            DegradationEvent::Recovery { .. } => ("recovery", events::RECOVERY_STAGE),
        };
        let payload = serde_json::to_value(event).unwrap_or(Value::Null);
        let sent = self.send(d, kind, payload.clone());
        let data = json!({"resource": d.resource.name(), "event": payload, "delivered": sent.unwrap_or_else(|e| e)});
        self.recorder.emit(d.at, topic, Some(d.agent.as_str()), data);
    }

    /// Record an applied decision now, or when its kernel wait settles.
    /// A migrate that cannot move the agent: suspended instead (the policy's
    /// migrate holds it like a suspension).
    pub(super) fn migrate_fallback(&mut self, d: &Decision, why: &str) {
        let source = Source::Policy(d.resource.clone());
        let applied = self.apply(Intent { agent: d.agent.clone(), source, op: Op::Freeze });
        self.finish(d, "migrate", applied, Outcome::Fallback, &format!("{why}: suspended instead; "));
    }

    /// A migrate whose target node starts the agent: stopped here (notice, grace).
    pub(super) fn migrate_away(&mut self, d: &Decision, to: &str) {
        let grace = self.domain.policy.config().terminate_grace;
        let reason = format!("{}{to}", super::cluster::MIGRATED_TO);
        let applied =
            self.apply(Intent { agent: d.agent.clone(), source: Source::Policy(d.resource.clone()), op: Op::Terminate { grace, reason } });
        self.finish(
            d,
            "migrate",
            applied,
            Outcome::Success,
            &format!("moving to node {to}: stopped here (notice, grace), started there; "),
        );
    }

    pub(super) fn finish(&mut self, d: &Decision, action: &str, applied: Applied, success: Outcome, prefix: &str) {
        let decision = serde_json::to_value(d).unwrap_or(Value::Null);
        let attempt = Attempt {
            agent: d.agent.clone(),
            at: d.at,
            resource: d.resource.name().to_owned(),
            action: action.to_owned(),
            topic: events::decision_topic(&d.kind),
            data: json!({"decision": decision, "resource": d.resource.name()}),
            prefix: prefix.to_owned(),
            last_action: None,
            success,
            reply: None,
        };
        self.conclude(attempt, applied);
    }

    /// Publish and record a decision's outcome.
    pub(super) fn record_decision(&mut self, d: &Decision, action: &str, stage: Stage, outcome: Outcome, detail: &str) {
        if let Some(a) = self.agents.get_mut(&d.agent) {
            a.last_action = last_action(action, &d.resource.to_string(), stage, outcome);
        }
        let topic = events::decision_topic(&d.kind);
        let decision = serde_json::to_value(d).unwrap_or(Value::Null);
        let data = json!({"decision": decision, "resource": d.resource.name(), "outcome": outcome, "detail": detail});
        let e = Enforcement {
            at: d.at,
            agent: d.agent.as_str(),
            resource: d.resource.name(),
            action,
            stage,
            outcome,
            detail,
            topic: &topic,
            data,
        };
        self.recorder.enforcement(e);
    }
}

fn worst_name(k: ViolationKind) -> &'static str {
    match k {
        ViolationKind::Soft => "soft",
        ViolationKind::Burst => "burst",
        ViolationKind::Hard => "hard",
    }
}

/// The live view's "last action" text.
pub(super) fn last_action(action: &str, resource: &str, stage: Stage, outcome: Outcome) -> String {
    match (stage, outcome) {
        (Stage::Scheduled, _) => format!("{action} (scheduled) {resource}"),
        (_, Outcome::Success) => format!("{action} {resource}"),
        (_, o) => format!("{action} {resource} ({o})"),
    }
}
