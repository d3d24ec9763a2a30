//! Commands into a running governor from outside its loop (the daemon's
//! API): each carries a oneshot channel for the answer, so the loop stays
//! the only owner of the state. Errors are a typed [`ControlError`]; the
//! API alone decides what HTTP status each gets.

use super::intent::{Intent, Op, Source};
use super::settle::Attempt;
use super::{Backend, Governor};
use allot_core::holds::Throttle;
use allot_core::limits::LimitOverride;
use allot_core::{AgentId, QuotaGroup, Resource, events};
use allot_store::Outcome;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

mod error;
pub use error::ControlError;

/// Where an answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// What an operator may do to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction {
    /// Freeze it (the operator's hold).
    Suspend,
    /// Release the operator's freeze and throttle; with `force`, every holder's, and the policy's pending escalations.
    Resume {
        /// Also lift the policy's and host pressure's holds.
        force: bool,
    },
    /// Notice, grace, kill.
    Terminate,
    /// Limit CPU to this many millicores (the operator's hold).
    Throttle(u64),
    /// Release the operator's throttle.
    Clear,
}

impl OperatorAction {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            OperatorAction::Suspend => "suspend",
            OperatorAction::Resume { .. } => "resume",
            OperatorAction::Terminate => "terminate",
            OperatorAction::Throttle(_) => "throttle",
            OperatorAction::Clear => "clear",
        }
    }
}

/// Who holds an agent frozen or throttled.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeldBy {
    /// Holders of a freeze.
    pub freeze: Vec<String>,
    /// Holders of a throttle.
    pub throttle: Vec<String>,
}

/// An agent as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AgentStatus {
    /// Id.
    pub id: String,
    /// Group.
    pub group: String,
    /// State name.
    pub state: String,
    /// Why it exited, if it did.
    pub exit: Option<String>,
    /// What ended it, if it exited: `exit` (its own), `oom_kill` (the
    /// kernel's OOM killer, whose limit in `exit`), `allot` (terminated).
    pub exit_cause: Option<String>,
    /// Its processes.
    pub pids: Vec<u32>,
    /// Latest usage per resource, in internal units.
    pub usage: BTreeMap<String, u64>,
    /// Where its disk_io reading comes from: `blkio`, `io.stat` (the cgroup's
    /// counters) or `proc` (the processes' `/proc/<pid>/io`); none before the first reading.
    pub disk_io_source: Option<String>,
    /// The last action taken.
    pub last_action: String,
    /// Who holds it frozen or throttled.
    pub held_by: HeldBy,
    /// Its quota.
    pub quota: Value,
    /// The uid it runs as (`None`: adopted, or not known).
    pub uid: Option<u32>,
    /// Whether it runs as root (asked for by name): marked in `ps`.
    pub root: bool,
    /// Budget use per custom resource at its tightest level (`level`, `spent`,
    /// `reserved`, `hard`, `remaining`); null without budgets.
    pub budgets: Value,
}

/// A command to the governor.
#[derive(Debug)]
pub enum Control {
    /// Every agent.
    List(oneshot::Sender<Vec<AgentStatus>>),
    /// One agent.
    Agent(String, oneshot::Sender<Option<AgentStatus>>),
    /// One agent's quota (its status's `quota`, built alone).
    Quota(String, oneshot::Sender<Option<Value>>),
    /// Whether the daemon is ready: the reason when it is not (the store cannot record).
    Ready(oneshot::Sender<Result<(), String>>),
    /// Which agent a pid belongs to (for peer-credential authorization).
    Owner(u32, oneshot::Sender<Option<String>>),
    /// An operator action.
    Act(String, OperatorAction, Reply<String>),
    /// Usage an agent reports itself (custom resources such as tokens), with
    /// the window it was written in (`None`: the window of its limit).
    Report(String, Resource, u64, Option<allot_core::quantity::Window>, Reply<Value>),
    /// An agent acknowledges a request it received (by its channel sequence number).
    Ack(String, u64, String, Reply<Value>),
    /// Every group, with its members.
    Groups(oneshot::Sender<Vec<(QuotaGroup, Vec<String>)>>),
    /// Create (`true`) or replace (`false`) a group: stored, and written to
    /// the kernel with its members' backstops; the answer is what was written.
    PutGroup(Box<QuotaGroup>, bool, Reply<Value>),
    /// Delete a group without members.
    DeleteGroup(String, Reply<()>),
    /// Usage summed over every agent (for the host's available capacity).
    TotalUsage(oneshot::Sender<BTreeMap<String, u64>>),
    /// Start a new agent.
    Start(Box<crate::fleet::AgentDef>, Reply<Value>),
    /// Adopt a running process as a new agent (moving it into a cgroup when asked).
    Adopt(Box<crate::fleet::AgentDef>, u32, bool, Reply<Value>),
    /// Change an agent's limits at run time: merged field by field over its
    /// current overrides (those of its start included), then over its group.
    SetLimits(String, BTreeMap<Resource, LimitOverride>, Reply<Value>),
    /// An agent's quota compliance: per resource usage, limits, status and
    /// pending escalation; who holds it throttled or frozen.
    Compliance(String, Reply<Value>),
    /// Reserve amounts of custom resources for an agent, for a time.
    Reserve(String, BTreeMap<Resource, u64>, std::time::Duration, Reply<Value>),
    /// Settle a reservation with the actual amounts; the caller's agent (`None`: the operator).
    Settle(u64, Option<String>, BTreeMap<Resource, u64>, Reply<Value>),
    /// Release a reservation; the caller's agent (`None`: the operator).
    Release(u64, Option<String>, Reply<Value>),
    /// Budgets and open reservations.
    Budgets(super::budgets::BudgetQuery, Reply<Value>),
    /// Declare or replace a pool's budgets.
    PutPool(String, BTreeMap<Resource, allot_core::budget::BudgetSpec>, Reply<Value>),
    /// Delete a pool declared through the API.
    DeletePool(String, Reply<Value>),
    /// Cluster mode: this node's demand of every cluster total, and what it publishes of itself.
    ClusterDemand(oneshot::Sender<(Vec<crate::cluster::Demand>, Value)>),
    /// Cluster mode: apply slices locally; each one's result.
    ClusterApply(Vec<(crate::cluster::TotalId, u64)>, oneshot::Sender<Vec<Result<(), String>>>),
    /// Cluster mode: record an event of the node (topic, data; its agent, if any, in `data.agent`).
    ClusterEvent(&'static str, Value),
    /// Cluster mode: where an agent being migrated goes (or why it cannot).
    Migrated(String, Result<String, String>),
}

impl<B: Backend> Governor<B> {
    /// Carry out a command.
    pub(super) fn handle_control(&mut self, c: Control) {
        let c = match self.refuse_unrecordable(c) {
            Some(c) => c,
            None => return,
        };
        // Changes of quotas and groups change budgets.
        let config = matches!(
            c,
            Control::Start(..) | Control::Adopt(..) | Control::SetLimits(..) | Control::PutGroup(..) | Control::DeleteGroup(..)
        );
        // Reads change nothing the metrics show (the tick refreshes them too).
        let read = matches!(
            c,
            Control::List(..)
                | Control::Agent(..)
                | Control::Quota(..)
                | Control::Ready(..)
                | Control::Owner(..)
                | Control::Groups(..)
                | Control::TotalUsage(..)
                | Control::Compliance(..)
        );
        match c {
            Control::Ready(reply) => {
                let _ =
                    reply.send(self.recorder.failing.clone().map_or(Ok(()), |why| Err(format!("the state store cannot record: {why}"))));
            }
            Control::Adopt(def, pid, move_it, reply) => {
                let _ = reply.send(self.start_new(*def, Some((pid, move_it))));
            }
            Control::Start(def, reply) => {
                let _ = reply.send(self.start_new(*def, None));
            }
            Control::List(reply) => {
                let _ = reply.send(self.agents.map.keys().filter_map(|id| self.status(id)).collect());
            }
            Control::Agent(id, reply) => {
                // An exited agent no longer in memory answers from its stored row (see `retention`).
                let _ = reply.send(AgentId::new(id).ok().and_then(|id| self.status(&id).or_else(|| self.stored_status(&id))));
            }
            Control::Quota(id, reply) => {
                let quota = AgentId::new(id).ok().and_then(|id| match self.agents.get(&id) {
                    Some(_) => Some(self.quota_value(&id)),
                    None => self.stored_status(&id).map(|s| s.quota),
                });
                let _ = reply.send(quota);
            }
            Control::Owner(pid, reply) => {
                let dirs = self.backend.cgroup_dirs_of_pid(pid);
                let _ = reply.send(self.agents.owner_of(pid, dirs.as_deref()).map(ToString::to_string));
            }
            Control::Act(agent, action, reply) => self.operator(&agent, action, reply),
            Control::Ack(agent, seq, note, reply) => {
                let _ = reply.send(self.ack(&agent, seq, &note));
            }
            Control::Groups(reply) => {
                let l = &self.domain.ledger;
                let _ = reply.send(l.groups().map(|g| (g.clone(), l.members(&g.name).map(ToString::to_string).collect())).collect());
            }
            Control::PutGroup(g, create, reply) => {
                let _ = reply.send(self.put_group(*g, create));
            }
            Control::DeleteGroup(name, reply) => {
                let _ = reply.send(self.delete_group(&name));
            }
            Control::TotalUsage(reply) => {
                let _ = reply.send(self.domain.ledger.total_usage().into_iter().map(|(r, v)| (r.name().to_owned(), v)).collect());
            }
            Control::Report(agent, resource, value, window, reply) => {
                return self.report_usage(&agent, resource, value, window, reply);
            }
            Control::Reserve(agent, amounts, ttl, reply) => return self.reserve(&agent, amounts, ttl, reply),
            Control::Settle(rid, caller, actual, reply) => return self.settle(rid, caller.as_deref(), &actual, reply),
            Control::Release(rid, caller, reply) => return self.release(rid, caller.as_deref(), reply),
            Control::Budgets(query, reply) => {
                let _ = reply.send(self.budget_views(&query));
                return;
            }
            Control::PutPool(name, budgets, reply) => {
                let _ = reply.send(self.put_pool(&name, budgets));
            }
            Control::DeletePool(name, reply) => {
                let _ = reply.send(self.delete_pool(&name));
            }
            Control::SetLimits(agent, overrides, reply) => {
                let _ = reply.send(self.running(&agent).and_then(|()| self.set_limits(&agent, overrides)));
            }
            Control::Compliance(agent, reply) => {
                let _ = reply.send(self.compliance(&agent));
            }
            Control::ClusterDemand(reply) => {
                let _ = reply.send((self.cluster_demand(), self.cluster_node_info()));
                return;
            }
            Control::ClusterApply(slices, reply) => {
                let _ = reply.send(slices.iter().map(|(id, cap)| self.cluster_apply(id, *cap)).collect());
            }
            Control::ClusterEvent(topic, data) => {
                let now = self.clock.now();
                let agent = data["agent"].as_str().map(str::to_owned);
                self.recorder.emit(now, topic, agent.as_deref(), data);
            }
            Control::Migrated(agent, to) => self.migrated(&agent, to),
        }
        if config {
            self.sync_budgets();
        }
        if !read {
            self.refresh_metrics();
        }
    }

    /// While the store cannot record (a full disk), refuse the changes that
    /// must be recorded to mean anything: starts, adoptions, quota and group
    /// changes, acknowledgements and usage reports get `Unrecorded` (503).
    /// Reads go on, and so does enforcement, the operator's actions included.
    fn refuse_unrecordable(&mut self, c: Control) -> Option<Control> {
        let Some(why) = self.recorder.failing.clone() else { return Some(c) };
        let no = || ControlError::Unrecorded(why.clone());
        match c {
            Control::Start(_, reply) | Control::Adopt(_, _, _, reply) => drop(reply.send(Err(no()))),
            Control::SetLimits(_, _, reply) | Control::Ack(_, _, _, reply) => drop(reply.send(Err(no()))),
            Control::Report(_, _, _, _, reply) | Control::Reserve(_, _, _, reply) => drop(reply.send(Err(no()))),
            Control::Settle(_, _, _, reply) | Control::Release(_, _, reply) => drop(reply.send(Err(no()))),
            Control::PutPool(_, _, reply) | Control::DeletePool(_, reply) => drop(reply.send(Err(no()))),
            Control::PutGroup(_, _, reply) => drop(reply.send(Err(no()))),
            Control::DeleteGroup(_, reply) => drop(reply.send(Err(no()))),
            c => return Some(c),
        }
        None
    }

    /// The id of a known agent.
    pub(super) fn known(&self, agent: &str) -> Result<AgentId, ControlError> {
        AgentId::new(agent).ok().filter(|id| self.agents.get(id).is_some()).ok_or_else(|| ControlError::NoAgent(agent.to_owned()))
    }

    /// Whether a quota can change: the agent runs (or is being terminated);
    /// an exited one, in memory or only stored (forgotten, see
    /// `retention`), is `NotRunning` with its state, as `GET` shows it.
    fn running(&self, agent: &str) -> Result<(), ControlError> {
        let not_running = |state: &str| Err(ControlError::NotRunning { agent: agent.to_owned(), state: state.to_owned() });
        let Ok(id) = AgentId::new(agent) else { return Err(ControlError::NoAgent(agent.to_owned())) };
        match self.agents.get(&id) {
            Some(a) if matches!(a.lifecycle, super::agents::Lifecycle::Exited(_)) => not_running(a.state_name()),
            Some(_) => Ok(()),
            None => match self.stored_status(&id) {
                Some(st) => not_running(&st.state),
                None => Err(ControlError::NoAgent(agent.to_owned())),
            },
        }
    }

    /// An agent's quota as the API shows it (null when the ledger has none).
    fn quota_value(&self, id: &AgentId) -> Value {
        self.domain.ledger.quota(id).map_or(Value::Null, |q| serde_json::to_value(q).unwrap_or(Value::Null))
    }

    fn status(&self, id: &AgentId) -> Option<AgentStatus> {
        let a = self.agents.get(id)?;
        let names = |hs: Vec<allot_core::holds::Holder>| hs.iter().map(allot_core::holds::Holder::wire_name).collect();
        Some(AgentStatus {
            id: id.to_string(),
            group: a.def.spec.group.clone(),
            state: a.state_name().to_owned(),
            exit: a.exit_reason().map(str::to_owned),
            exit_cause: a.exit_cause.filter(|_| a.is_exited()).map(str::to_owned),
            pids: a.proc.as_ref().and_then(|p| p.actuator.pids().ok()).unwrap_or_default(),
            usage: a.usage.iter().map(|(k, v)| (k.name().to_owned(), *v)).collect(),
            disk_io_source: a.io_from.map(|f| f.name().to_owned()),
            last_action: a.last_action.clone(),
            held_by: HeldBy { freeze: names(a.holds.freeze_holders()), throttle: names(a.holds.throttle_holders()) },
            quota: self.quota_value(id),
            uid: a.def.user.map(|u| u.0),
            root: a.def.user.is_some_and(|u| u.0 == 0),
            budgets: self.budget_use(id),
        })
    }

    /// The agent's compliance now (`allot_core::compliance`), with RFC 3339 times added.
    fn compliance(&self, agent: &str) -> Result<Value, ControlError> {
        let id = self.known(agent)?;
        let a = self.agents.get(&id).ok_or_else(|| ControlError::NoAgent(agent.to_owned()))?;
        let ledger = &self.domain.ledger;
        let Some(quota) = ledger.quota(&id) else {
            return Err(ControlError::NotRunning { agent: agent.to_owned(), state: a.state_name().to_owned() });
        };
        let now = self.clock.now();
        let violations = ledger.check(&id, now).unwrap_or_default();
        let pending = self.domain.policy.pending(&id);
        let c = allot_core::compliance::assess(&id, quota, |r| ledger.usage(&id, r), &violations, &pending, &a.holds, now);
        let mut v = serde_json::to_value(&c).map_err(|e| ControlError::Invalid { field: "agent", message: e.to_string() })?;
        v["state"] = json!(a.state_name());
        v["at"] = json!(super::clock::rfc3339(now));
        // A policy throttle on a budget resource paces the agent's reservations: it is throttled by the policy.
        let paced = self.budget_throttles(&id);
        if !paced.is_empty() {
            let mut by: Vec<Value> = paced.iter().map(|(r, _)| json!(format!("policy:{r}"))).collect();
            for h in v["throttled_by"].as_array().cloned().unwrap_or_default() {
                if !by.contains(&h) {
                    by.push(h);
                }
            }
            v["throttled_by"] = Value::Array(by);
            v["throttled"] = json!(true);
            v["reservations_paced"] =
                json!(paced.iter().map(|(r, per_s)| (r.name().to_owned(), json!(per_s))).collect::<serde_json::Map<_, _>>());
        }
        for r in v["resources"].as_array_mut().into_iter().flatten() {
            if let Some(due) = r["pending"]["due_ms"].as_u64() {
                r["pending"]["due"] = json!(super::clock::rfc3339(allot_core::Time::from_millis(due)));
            }
        }
        Ok(v)
    }

    fn ack(&mut self, agent: &str, seq: u64, note: &str) -> Result<Value, ControlError> {
        let id = self.known(agent)?;
        let now = self.clock.now();
        let ev = self.recorder.emit(now, events::REQUEST_ACKNOWLEDGED, Some(id.as_str()), json!({"request_seq": seq, "note": note}));
        // An acknowledgement that is not recorded is not one.
        let ev = ev.ok_or_else(|| ControlError::Unrecorded(self.recorder.failing.clone().unwrap_or_default()))?;
        Ok(json!({"agent": agent, "request_seq": seq, "event_seq": ev}))
    }

    /// Create or change a group: in the ledger (members' quotas re-resolved),
    /// its totals written to the kernel when it has live members, stored (a
    /// restarted daemon has it before it resolves its agents' quotas), then
    /// its members' backstops written. Refused, with nothing changed (the
    /// ledger, the store and the kernel as before), when the kernel refuses a
    /// total (`Refused`, 409, naming `totals.<resource>`: on v1 a memory
    /// total under what the members use and the kernel cannot reclaim) or
    /// the store cannot record it.
    fn put_group(&mut self, g: QuotaGroup, create: bool) -> Result<Value, ControlError> {
        use allot_core::ledger::LedgerError;
        let name = g.name.clone();
        let previous = self.domain.ledger.group(&name).cloned();
        let stored = allot_store::dto::StoredGroup::from_core(&g);
        let res = if create {
            self.domain.ledger.add_group(g)
        } else if previous.is_none() {
            return Err(ControlError::NoGroup(name));
        } else {
            self.domain.ledger.set_group(g)
        };
        res.map_err(|e| match e {
            LedgerError::DuplicateGroup(_) => ControlError::GroupExists(name.clone()),
            LedgerError::UnknownGroup { .. } => ControlError::NoGroup(name.clone()),
            other => ControlError::Invalid { field: "body", message: other.to_string() },
        })?;
        let members = self.domain.ledger.member_count(&name);
        let tried = self.domain.ledger.group(&name).map(|g| allot_core::backstops::group(g, members)).unwrap_or_default();
        let undo = |gov: &mut Self, written: bool| {
            let _ = match previous.clone() {
                Some(p) => gov.domain.ledger.set_group(p),
                None => gov.domain.ledger.remove_group(&name).map(drop),
            };
            if written {
                gov.restore_totals(&name, &tried);
            }
        };
        let live = !self.live_members(&name).is_empty();
        let totals = if live { self.write_totals_of(&name) } else { None };
        if let Some((resource, error)) = totals.as_ref().and_then(refused_total) {
            let usage = self.domain.ledger.group_usage(&name);
            undo(self, true);
            let unit = resource.unit();
            let fmt = |v: u64| allot_core::quantity::format_approx(unit, v);
            let used = usage.get(&resource).map_or_else(String::new, |u| format!(" (its members use {} now)", fmt(*u)));
            let message = format!(
                "the kernel refused the group's {resource} total of {}{used}: {error}; nothing was changed",
                tried.get(&resource).map_or_else(|| "?".to_owned(), |v| fmt(*v)),
            );
            return Err(ControlError::Refused { field: format!("totals.{resource}"), message });
        }
        let now = self.clock.now();
        if let Err(e) = self.recorder.store.put_group(&stored, now.as_millis()) {
            undo(self, totals.is_some());
            self.recorder.unrecorded(&e.to_string());
            return Err(ControlError::Unrecorded(e.to_string()));
        }
        if live {
            self.members_changed(&name);
        }
        let kernel = totals.unwrap_or(Value::Null);
        let data = json!({"group": name, "created": create, "kernel": kernel});
        self.recorder.emit(now, events::GROUP_CHANGED, None, data);
        Ok(kernel)
    }

    /// Delete a group without members, from the ledger and the store (a
    /// built-in group or one of the fleet file comes back at the next start).
    fn delete_group(&mut self, name: &str) -> Result<(), ControlError> {
        let removed = self.domain.ledger.remove_group(name).map_err(|e| match e {
            allot_core::ledger::LedgerError::GroupNotEmpty { .. } => ControlError::GroupInUse(e.to_string()),
            _ => ControlError::NoGroup(name.to_owned()),
        })?;
        if let Err(e) = self.recorder.store.delete_group(name) {
            let _ = self.domain.ledger.add_group(removed);
            self.recorder.unrecorded(&e.to_string());
            return Err(ControlError::Unrecorded(e.to_string()));
        }
        self.recorder.emit(self.clock.now(), events::GROUP_CHANGED, None, json!({"group": name, "deleted": true}));
        Ok(())
    }

    /// An operator action: an intent with the operator (or, forced, every holder) as its source.
    fn operator(&mut self, agent: &str, action: OperatorAction, reply: Reply<String>) {
        let id = match self.known(agent) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(a) = self.agents.get(&id).filter(|a| !a.is_active() || matches!(a.lifecycle, super::agents::Lifecycle::Terminating(_)))
        {
            let _ = reply.send(Err(ControlError::NotRunning { agent: agent.to_owned(), state: a.state_name().to_owned() }));
            return;
        }
        let now = self.clock.now();
        let op = match action {
            OperatorAction::Suspend => Op::Freeze,
            OperatorAction::Resume { force: false } => Op::Release,
            OperatorAction::Resume { force: true } => {
                // The policy forgets its holds and pending escalations; it re-decides from fresh samples.
                let _ = self.domain.policy.resume(&id, now);
                Op::ReleaseAll
            }
            OperatorAction::Throttle(m) => {
                Op::Throttle { want: Throttle { cpu_millicores: Some(m), memory_high: None }, fallback_cpu: None }
            }
            OperatorAction::Clear => Op::Unthrottle,
            OperatorAction::Terminate => {
                Op::Terminate { grace: self.settings.policy.terminate_grace, reason: "terminated by the operator".into() }
            }
        };
        let applied = self.apply(Intent { agent: id.clone(), source: Source::Operator, op });
        let name = if matches!(action, OperatorAction::Resume { .. } | OperatorAction::Clear) { "restore" } else { action.name() };
        let attempt = Attempt {
            agent: id,
            at: now,
            resource: "-".into(),
            action: name.into(),
            topic: events::enforcement_topic(name),
            data: json!({"operator": true, "action": action.name()}),
            prefix: "by the operator: ".into(),
            last_action: Some(format!("{} (operator)", action.name())),
            success: Outcome::Success,
            reply: Some(reply),
        };
        self.conclude(attempt, applied);
    }
}

/// The first total of a group-totals note the kernel refused: its resource and the error.
fn refused_total(note: &Value) -> Option<(Resource, String)> {
    note["results"].as_array()?.iter().find_map(|r| {
        let outcome = r["outcome"].as_str()?;
        (outcome != "success").then(|| Some((r["resource"].as_str()?.parse().ok()?, outcome.to_owned())))?
    })
}
