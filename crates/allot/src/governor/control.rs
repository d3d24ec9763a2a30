//! Commands to a running governor from outside its loop (the daemon's API):
//! each carries a oneshot channel for the answer, so the loop stays the only
//! owner of the state.

use super::{AgentState, Backend, Governor, Timer};
use allot_core::{AgentId, events};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// What an operator may do to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorAction {
    /// Freeze it.
    Suspend,
    /// Thaw it and lift throttles.
    Resume,
    /// Notice, grace, kill.
    Terminate,
    /// Limit CPU to this many millicores.
    Throttle(u64),
    /// Lift throttles (cpu limit, memory.high).
    Clear,
}

impl OperatorAction {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            OperatorAction::Suspend => "suspend",
            OperatorAction::Resume => "resume",
            OperatorAction::Terminate => "terminate",
            OperatorAction::Throttle(_) => "throttle",
            OperatorAction::Clear => "clear",
        }
    }
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
    /// Its processes.
    pub pids: Vec<u32>,
    /// Latest usage per resource, in internal units.
    pub usage: BTreeMap<String, u64>,
    /// The last action taken.
    pub last_action: String,
    /// Its quota.
    pub quota: Value,
}

/// A failure to carry out a command: an HTTP-like status and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlError {
    /// 404 for an unknown agent, 409 for a wrong state, 500 for a kernel failure.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// A command to the governor.
#[derive(Debug)]
pub enum Control {
    /// Every agent.
    List(oneshot::Sender<Vec<AgentStatus>>),
    /// Which agent a pid belongs to (for peer-credential authorization).
    Owner(u32, oneshot::Sender<Option<String>>),
    /// An operator action.
    Act(String, OperatorAction, oneshot::Sender<Result<String, ControlError>>),
    /// Usage an agent reports itself (custom resources such as tokens).
    Report(String, allot_core::Resource, u64, oneshot::Sender<Result<Value, ControlError>>),
    /// An agent acknowledges a request it received (by its channel sequence number).
    Ack(String, u64, String, oneshot::Sender<Result<Value, ControlError>>),
    /// Loop timings: (ticks, seconds spent sampling in the last tick, total seconds sampling).
    Stats(oneshot::Sender<(u64, f64, f64)>),
    /// Every group, with its members.
    Groups(oneshot::Sender<Vec<(allot_core::QuotaGroup, Vec<String>)>>),
    /// Create (`true`) or replace (`false`) a group.
    PutGroup(Box<allot_core::QuotaGroup>, bool, oneshot::Sender<Result<(), ControlError>>),
    /// Delete a group without members.
    DeleteGroup(String, oneshot::Sender<Result<(), ControlError>>),
    /// Usage summed over every agent (for the host's available capacity).
    TotalUsage(oneshot::Sender<BTreeMap<String, u64>>),
    /// Start a new agent.
    Start(Box<crate::fleet::AgentDef>, oneshot::Sender<Result<Value, ControlError>>),
    /// Adopt a running process as a new agent (moving it into a cgroup when asked).
    Adopt(Box<crate::fleet::AgentDef>, u32, bool, oneshot::Sender<Result<Value, ControlError>>),
    /// Change an agent's limits at run time (overrides merged over its group).
    SetLimits(String, BTreeMap<allot_core::Resource, allot_core::limits::LimitOverride>, oneshot::Sender<Result<Value, ControlError>>),
}

impl<B: Backend> Governor<B> {
    /// Carry out a command; returns the id of an agent it started (to watch).
    pub(super) fn handle_control(&mut self, c: Control) -> Option<AgentId> {
        match c {
            Control::Adopt(def, pid, move_it, reply) => {
                let id = def.spec.id.clone();
                let res = self.start_new(*def, Some((pid, move_it)));
                let started = res.is_ok();
                let _ = reply.send(res);
                return started.then_some(id);
            }
            Control::Start(def, reply) => {
                let id = def.spec.id.clone();
                let res = self.start_new(*def, None);
                let started = res.is_ok();
                let _ = reply.send(res);
                return started.then_some(id);
            }
            Control::List(reply) => {
                let _ = reply.send(self.statuses());
            }
            Control::Owner(pid, reply) => {
                let owner = self.agents.iter().find(|(_, r)| {
                    r.started.as_ref().is_some_and(|s| s.leader.pid() == pid || s.actuator.pids().is_ok_and(|p| p.contains(&pid)))
                });
                let _ = reply.send(owner.map(|(id, _)| id.to_string()));
            }
            Control::Act(agent, action, reply) => {
                let _ = reply.send(self.operator(&agent, action));
            }
            Control::Ack(agent, seq, note, reply) => {
                let res = match AgentId::new(agent.clone()) {
                    Ok(id) if self.agents.contains_key(&id) => {
                        let now = self.clock.now();
                        let ev = self.emit(
                            now,
                            "resource_management.request.acknowledged",
                            Some(&agent),
                            json!({"request_seq": seq, "note": note}),
                        );
                        Ok(json!({"agent": agent, "request_seq": seq, "event_seq": ev}))
                    }
                    _ => Err(ControlError { status: 404, message: format!("no agent {agent:?}") }),
                };
                let _ = reply.send(res);
            }
            Control::Stats(reply) => {
                let _ = reply.send((self.tick, self.last_tick_secs, self.total_tick_secs));
            }
            Control::Groups(reply) => {
                let groups =
                    self.ledger.groups().map(|g| (g.clone(), self.ledger.members(&g.name).map(|m| m.to_string()).collect())).collect();
                let _ = reply.send(groups);
            }
            Control::PutGroup(g, create, reply) => {
                let res = if create {
                    self.ledger.add_group(*g)
                } else if self.ledger.group(&g.name).is_none() {
                    Err(allot_core::ledger::LedgerError::UnknownGroup { group: g.name.clone(), known: String::new() })
                } else {
                    self.ledger.set_group(*g)
                };
                let _ = reply.send(res.map_err(|e| {
                    let status = match e {
                        allot_core::ledger::LedgerError::DuplicateGroup(_) => 409,
                        allot_core::ledger::LedgerError::UnknownGroup { .. } => 404,
                        _ => 422,
                    };
                    ControlError { status, message: e.to_string() }
                }));
            }
            Control::DeleteGroup(name, reply) => {
                let res = self.ledger.remove_group(&name).map(|_| ()).map_err(|e| {
                    let status = if matches!(e, allot_core::ledger::LedgerError::GroupNotEmpty { .. }) { 409 } else { 404 };
                    ControlError { status, message: e.to_string() }
                });
                let _ = reply.send(res);
            }
            Control::TotalUsage(reply) => {
                let _ = reply.send(self.ledger.total_usage().into_iter().map(|(r, v)| (r.name().to_owned(), v)).collect());
            }
            Control::Report(agent, resource, value, reply) => {
                let _ = reply.send(self.report_usage(&agent, resource, value));
            }
            Control::SetLimits(agent, overrides, reply) => {
                let _ = reply.send(self.set_limits(&agent, overrides));
            }
        }
        None
    }

    fn start_new(&mut self, def: crate::fleet::AgentDef, adopt: Option<(u32, bool)>) -> Result<Value, ControlError> {
        let id = def.spec.id.clone();
        if self.agents.get(&id).is_some_and(|r| !matches!(r.state, AgentState::Exited(_))) {
            return Err(ControlError { status: 409, message: format!("agent {id} exists and has not exited") });
        }
        let _ = self.ledger.unregister(&id);
        self.ledger.register(def.spec.clone()).map_err(|e| ControlError { status: 422, message: e.to_string() })?;
        let channel = super::channel::Channel::create(&self.channel_dir, id.as_str(), def.notify_signal)
            .map_err(|message| ControlError { status: 500, message })?;
        self.agents.insert(id.clone(), super::Running::new(def, channel));
        let res = match adopt {
            None => self.start_agent(&id),
            Some((pid, move_it)) => self.adopt_agent(&id, pid, move_it),
        };
        if let Err(e) = res {
            let now = self.clock.now();
            self.mark_exited(&id, &format!("could not start: {e}"), now);
            return Err(ControlError { status: 422, message: format!("could not start: {e}") });
        }
        let pid = self.agents.get(&id).and_then(|r| r.started.as_ref()).map(|s| s.leader.pid());
        Ok(json!({"id": id.as_str(), "pid": pid, "state": "running"}))
    }

    fn report_usage(&mut self, agent: &str, resource: allot_core::Resource, value: u64) -> Result<Value, ControlError> {
        let id = AgentId::new(agent).map_err(|_| ControlError { status: 404, message: format!("no agent {agent:?}") })?;
        let now = self.clock.now();
        let a = self.ledger.record(&id, resource.clone(), value, now).map_err(|e| ControlError { status: 404, message: e.to_string() })?;
        if let Some(r) = self.agents.get_mut(&id) {
            r.usage.insert(resource.clone(), value);
        }
        self.pending_samples.push((id.to_string(), resource.name().to_owned(), now.as_millis(), value));
        let decisions = self.policy.observe(&a);
        let n = decisions.len();
        self.execute_all(decisions);
        Ok(json!({"agent": agent, "resource": resource.name(), "value": value, "violation": a.violation, "decisions": n}))
    }

    fn set_limits(
        &mut self,
        agent: &str,
        overrides: BTreeMap<allot_core::Resource, allot_core::limits::LimitOverride>,
    ) -> Result<Value, ControlError> {
        let id = AgentId::new(agent).map_err(|_| ControlError { status: 404, message: format!("no agent {agent:?}") })?;
        let r = self.agents.get_mut(&id).ok_or_else(|| ControlError { status: 404, message: format!("no agent {agent:?}") })?;
        let mut spec = r.def.spec.clone();
        for (res, o) in overrides {
            spec.overrides.insert(res, o);
        }
        let quota = self.ledger.update_agent(spec.clone()).map_err(|e| ControlError { status: 422, message: e.to_string() })?.clone();
        if let Some(r) = self.agents.get_mut(&id) {
            r.def.spec = spec;
        }
        // Persist it, so that a restarted daemon takes the agent over with this quota.
        if let Ok(Some(mut stored)) = self.store.agent(agent) {
            stored.spec["quota"] = serde_json::to_value(&quota).unwrap_or(Value::Null);
            stored.updated_ms = self.clock.now().as_millis();
            if let Err(e) = self.store.put_agent(&stored) {
                return Err(ControlError { status: 500, message: e.to_string() });
            }
        }
        // The kernel backstops follow at once.
        self.apply_backstops(&id);
        let now = self.clock.now();
        let q = serde_json::to_value(&quota).unwrap_or(Value::Null);
        self.emit(now, "resource_management.quota.changed", Some(agent), json!({"quota": q}));
        Ok(q)
    }

    fn statuses(&self) -> Vec<AgentStatus> {
        self.agents
            .iter()
            .map(|(id, r)| AgentStatus {
                id: id.to_string(),
                group: r.def.spec.group.clone(),
                state: r.state.name().to_owned(),
                exit: if let AgentState::Exited(why) = &r.state { Some(why.clone()) } else { None },
                pids: r.started.as_ref().and_then(|s| s.actuator.pids().ok()).unwrap_or_default(),
                usage: r.usage.iter().map(|(k, v)| (k.name().to_owned(), *v)).collect(),
                last_action: r.last_action.clone(),
                quota: self.ledger.quota(id).map_or(Value::Null, |q| serde_json::to_value(q).unwrap_or(Value::Null)),
            })
            .collect()
    }

    fn operator(&mut self, agent: &str, action: OperatorAction) -> Result<String, ControlError> {
        let not_found = || ControlError { status: 404, message: format!("no agent {agent:?}") };
        let id = AgentId::new(agent).map_err(|_| not_found())?;
        let now = self.clock.now();
        let grace = self.settings.policy.terminate_grace;
        let restores = if action == OperatorAction::Resume { self.policy.resume(&id, now) } else { Vec::new() };
        let r = self.agents.get_mut(&id).ok_or_else(not_found)?;
        let pid = r.started.as_ref().map(|s| s.leader.pid());
        let Some(st) = r.started.as_mut() else {
            return Err(ControlError { status: 409, message: format!("agent {agent} is {}", r.state.name()) });
        };
        let result = match action {
            OperatorAction::Suspend => st.actuator.freeze().map(|o| {
                r.state = AgentState::Suspended;
                format!("frozen: {}", o.writes.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>().join(" ") + &o.detail)
            }),
            OperatorAction::Resume => {
                let thawed = st.actuator.thaw();
                let cleared = st.actuator.set_cpu_limit(None);
                let _ = st.actuator.set_memory_high(None);
                thawed.and(cleared).map(|_| {
                    r.state = AgentState::Running;
                    "thawed; throttles lifted".to_owned()
                })
            }
            OperatorAction::Throttle(m) => st.actuator.set_cpu_limit(Some(m)).map(|o| {
                r.state = AgentState::Throttled;
                format!(
                    "cpu limited to {m}m: {}",
                    o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect::<Vec<_>>().join("; ") + &o.detail
                )
            }),
            OperatorAction::Clear => st.actuator.set_cpu_limit(None).map(|o| {
                let _ = st.actuator.set_memory_high(None);
                r.state = AgentState::Running;
                format!("throttles lifted {}", o.detail)
            }),
            OperatorAction::Terminate => {
                let _ = r.channel.send(
                    "termination",
                    json!({"reason": "terminated by the operator", "grace_ms": allot_core::time::duration_millis(grace)}),
                    now.as_millis(),
                    pid,
                );
                let _ = st.actuator.thaw();
                let res = st.actuator.signal(rustix::process::Signal::TERM);
                r.terminating = Some("terminated by the operator".into());
                r.state = AgentState::Terminating;
                self.timers.push((now.plus(grace), Timer::Kill(id.clone())));
                res.map(|o| format!("{}; kill after {grace:?}", o.detail))
            }
        };
        let (outcome, detail) = match &result {
            Ok(d) => ("success", format!("by the operator: {d}")),
            Err(e) => ("failure", format!("by the operator: {e}")),
        };
        if let Some(r) = self.agents.get_mut(&id) {
            r.last_action = format!("{} (operator)", action.name());
        }
        let name = if matches!(action, OperatorAction::Resume | OperatorAction::Clear) { "restore" } else { action.name() };
        let data = json!({"operator": true, "action": action.name(), "outcome": outcome, "detail": detail});
        let seq = self.emit(now, &events::enforcement_topic(name), Some(id.as_str()), data.clone());
        let _ = self.store.record_enforcement(seq, now.as_millis(), id.as_str(), "-", name, outcome, &detail, &data);
        self.execute_all(restores.into_iter().filter(|d| !matches!(d.kind, allot_core::DecisionKind::Restore { .. })).collect());
        result.map_err(|e| ControlError { status: 500, message: e.to_string() })
    }
}
