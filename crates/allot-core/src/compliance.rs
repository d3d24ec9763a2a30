//! One agent's quota compliance in one answer: the reference design's
//! `check_quota_compliance`, `is_agent_throttled?` and `is_agent_suspended?`
//! together. Per limited resource: the latest usage, the limits, the
//! verdict (`ok`, `soft`, `burst`, `hard`), the escalation the policy has
//! scheduled and when it falls due; for the agent: who holds it throttled
//! or frozen and the settings in force. Pure: the caller passes the
//! ledger's observations and violations, the policy's pending escalations,
//! the holds and the time.

use crate::holds::{Effective, Holds};
use crate::ledger::{Observation, Violation, ViolationKind};
use crate::limits::Action;
use crate::quota::{AgentId, Quota};
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where usage stands against a resource's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At most soft (or not measured yet).
    Ok,
    /// Above soft, at most hard.
    Soft,
    /// Above hard, within burst and its window.
    Burst,
    /// Above burst, or above hard for longer than the burst window.
    Hard,
}

impl From<ViolationKind> for Status {
    fn from(k: ViolationKind) -> Self {
        match k {
            ViolationKind::Soft => Status::Soft,
            ViolationKind::Burst => Status::Burst,
            ViolationKind::Hard => Status::Hard,
        }
    }
}

/// An escalation the policy has scheduled and not yet carried out nor cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The action that follows.
    pub action: Action,
    /// When it falls due.
    pub due_ms: u64,
    /// How long from `now` until then (zero when overdue).
    pub in_ms: u64,
}

/// One resource of the quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCompliance {
    /// The resource.
    pub resource: Resource,
    /// Its internal unit (`bytes`, `millicores`, ...).
    pub unit: String,
    /// The latest usage, `None` before the first measurement or report.
    pub usage: Option<u64>,
    /// When it was measured.
    pub measured_ms: Option<u64>,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The burst limit.
    pub burst: u64,
    /// The action of the hard limit.
    pub action: Action,
    /// The verdict at `now`.
    pub status: Status,
    /// The escalation pending on this resource.
    pub pending: Option<Escalation>,
}

/// The agent's compliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compliance {
    /// The agent.
    pub agent: AgentId,
    /// Every limited resource at `ok`.
    pub compliant: bool,
    /// The worst status of any resource.
    pub status: Status,
    /// Per limited resource, by name.
    pub resources: Vec<ResourceCompliance>,
    /// Some holder holds a throttle (`is_agent_throttled?`).
    pub throttled: bool,
    /// Who holds the throttle (wire names: `policy:cpu`, `operator`, `host_pressure`).
    pub throttled_by: Vec<String>,
    /// Some holder holds a freeze (`is_agent_suspended?`).
    pub suspended: bool,
    /// Who holds the freeze.
    pub suspended_by: Vec<String>,
    /// The settings the holds put in force (cpu limit, memory.high, frozen).
    pub in_force: Effective,
}

/// The compliance of `agent` at `now`: `usage` is the ledger's latest
/// observation per resource, `violations` its current violations
/// (`Ledger::check`), `pending` the policy's scheduled escalations
/// (`Policy::pending`), `holds` who holds it.
pub fn assess(
    agent: &AgentId,
    quota: &Quota,
    usage: impl Fn(&Resource) -> Option<Observation>,
    violations: &[Violation],
    pending: &BTreeMap<Resource, (Action, Time)>,
    holds: &Holds,
    now: Time,
) -> Compliance {
    let resources: Vec<ResourceCompliance> = quota
        .limits
        .iter()
        .map(|(r, l)| {
            let obs = usage(r);
            let status = violations.iter().filter(|v| &v.resource == r).map(|v| Status::from(v.kind)).max().unwrap_or(Status::Ok);
            ResourceCompliance {
                resource: r.clone(),
                unit: r.unit().name().to_owned(),
                usage: obs.map(|o| o.value),
                measured_ms: obs.map(|o| o.at.as_millis()),
                soft: l.soft,
                hard: l.hard,
                burst: l.burst,
                action: l.action,
                status,
                pending: pending.get(r).map(|(action, due)| Escalation {
                    action: *action,
                    due_ms: due.as_millis(),
                    in_ms: due.as_millis().saturating_sub(now.as_millis()),
                }),
            }
        })
        .collect();
    let status = resources.iter().map(|r| r.status).max().unwrap_or(Status::Ok);
    let names = |hs: Vec<crate::holds::Holder>| hs.iter().map(crate::holds::Holder::wire_name).collect::<Vec<_>>();
    Compliance {
        agent: agent.clone(),
        compliant: status == Status::Ok,
        status,
        resources,
        throttled: holds.is_throttled(),
        throttled_by: names(holds.throttle_holders()),
        suspended: holds.is_frozen(),
        suspended_by: names(holds.freeze_holders()),
        in_force: holds.effective(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holds::{Holder, Throttle};
    use crate::ledger::Ledger;
    use crate::quota::AgentSpec;

    #[test]
    fn verdicts_pending_escalations_and_holders_in_one_answer() {
        let mut ledger = Ledger::with_builtin_groups();
        let id = AgentId::new("a").unwrap();
        ledger.register(AgentSpec::new(id.clone(), "standard_agent")).unwrap();
        let t0 = Time::from_secs(1000);
        // standard_agent: memory 200 MB soft / 500 MB hard; cpu 150m / 300m; processes 50 / 100.
        // The policy schedules memory's throttle 30 s after the hard violation.
        let mut policy = crate::policy::Policy::default();
        let _ = policy.observe(&ledger.record(&id, Resource::Memory, 600_000_000, t0).unwrap());
        let _ = policy.observe(&ledger.record(&id, Resource::Cpu, 200, t0).unwrap());
        let now = t0.plus(std::time::Duration::from_secs(5));
        let violations = ledger.check(&id, now).unwrap();
        let pending = policy.pending(&id);
        assert_eq!(pending.len(), 1, "{pending:?}");
        let mut holds = Holds::default();
        let _ = holds.throttle(Holder::Operator, Throttle { cpu_millicores: Some(100), memory_high: None });
        let _ = holds.freeze(Holder::Policy(Resource::Memory));
        let c = assess(&id, ledger.quota(&id).unwrap(), |r| ledger.usage(&id, r), &violations, &pending, &holds, now);
        let by = |r: Resource| c.resources.iter().find(|x| x.resource == r).unwrap().clone();
        let mem = by(Resource::Memory);
        assert_eq!((mem.usage, mem.soft, mem.hard, mem.status), (Some(600_000_000), 200_000_000, 500_000_000, Status::Hard));
        assert_eq!(mem.pending, Some(Escalation { action: Action::Throttle, due_ms: 1_030_000, in_ms: 25_000 }));
        assert_eq!((by(Resource::Cpu).status, by(Resource::Cpu).pending), (Status::Soft, None));
        let procs = by(Resource::Processes);
        assert_eq!((procs.usage, procs.status), (None, Status::Ok), "not measured yet");
        assert_eq!((c.status, c.compliant), (Status::Hard, false));
        assert_eq!((c.throttled, c.throttled_by.as_slice()), (true, ["operator".to_owned()].as_slice()));
        assert_eq!((c.suspended, c.suspended_by.as_slice()), (true, ["policy:memory".to_owned()].as_slice()));
        assert_eq!((c.in_force.cpu_millicores, c.in_force.frozen), (Some(100), true));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["resources"][0]["status"], "hard", "{json}");
    }

    #[test]
    fn an_agent_within_its_soft_limits_is_compliant() {
        let mut ledger = Ledger::with_builtin_groups();
        let id = AgentId::new("b").unwrap();
        ledger.register(AgentSpec::new(id.clone(), "lightweight_agent")).unwrap();
        let now = Time::from_secs(10);
        ledger.record(&id, Resource::Memory, 1_000_000, now).unwrap();
        let c = assess(&id, ledger.quota(&id).unwrap(), |r| ledger.usage(&id, r), &[], &BTreeMap::new(), &Holds::default(), now);
        assert!(c.compliant && !c.throttled && !c.suspended && c.status == Status::Ok, "{c:?}");
        assert!(c.throttled_by.is_empty() && c.suspended_by.is_empty());
    }
}
