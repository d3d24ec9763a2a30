//! Agents' lifecycle: start (or adopt) with a fresh incarnation, watch for
//! kernel notices, reap exited leaders (restart with backoff where the
//! fleet says so), and the kill at the end of a terminate grace; stopping
//! every agent at shutdown is in `stop`.

use super::agents::{Agent, Lifecycle};
use super::control::ControlError;
use super::intent::{Intent, Op, Source};
use super::settle::Attempt;
use super::{Backend, Governor};
use crate::fleet::{AgentDef, Restart};
use allot_core::holds::Holds;
use allot_core::limits::LimitOverride;
use allot_core::{AgentId, Resource, Time, events};
use allot_store::{AgentStateName, Outcome};
use serde_json::{Value, json};
use std::time::Duration;

/// Why a start failed.
#[derive(Debug)]
pub(super) enum StartError {
    /// The command could not be started.
    Failed(String),
    /// It was started but the store could not record it (it was stopped again).
    Unrecorded(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Failed(e) => write!(f, "{e}"),
            StartError::Unrecorded(e) => write!(f, "the state store cannot record it: {e}"),
        }
    }
}

impl<B: Backend> Governor<B> {
    /// Start (or adopt) an agent defined through the API.
    pub(super) fn start_new(&mut self, def: AgentDef, adopt: Option<(u32, bool)>) -> Result<Value, ControlError> {
        if let Some(why) = &self.stopping {
            return Err(ControlError::Stopping(why.clone()));
        }
        let id = def.spec.id.clone();
        if self.agents.get(&id).is_some_and(|a| !a.is_exited()) {
            return Err(ControlError::Exists(id.to_string()));
        }
        if let Some((pid, _)) = adopt {
            self.adoptable(pid)?;
        }
        let _ = self.domain.ledger.unregister(&id);
        self.domain.ledger.register(def.spec.clone()).map_err(|e| ControlError::Invalid { field: "limits", message: e.to_string() })?;
        let channel = super::channel::Channel::create(&self.agents.channel_dir, id.as_str(), def.notify_signal)
            .map_err(|message| ControlError::Invalid { field: "name", message })?;
        self.timers.forget(&id);
        self.agents.map.insert(id.clone(), Agent::new(def, channel));
        // Stored before it runs: a start the store cannot record is refused, never half-known.
        if let Err(e) = self.store_agent(&id) {
            self.agents.map.remove(&id);
            let _ = self.domain.ledger.unregister(&id);
            return Err(ControlError::Unrecorded(e));
        }
        let res = match adopt {
            None => self.start_agent(&id),
            Some((pid, move_it)) => self.adopt_agent(&id, pid, move_it),
        };
        if let Err(e) = res {
            let now = self.clock.now();
            self.mark_exited(&id, &format!("could not start: {e}"), now);
            return Err(match e {
                StartError::Unrecorded(e) => ControlError::Unrecorded(e),
                StartError::Failed(e) => ControlError::Invalid { field: "command", message: format!("could not start: {e}") },
            });
        }
        let a = self.agents.get(&id);
        let uid = a.and_then(|a| a.def.user).map(|u| u.0);
        let pids = a.and_then(|a| a.proc.as_ref()).and_then(|p| p.actuator.pids().ok()).unwrap_or_default();
        let cgroup = a.map(Agent::cgroup_dirs).unwrap_or_default();
        let mut answer = json!({"id": id.as_str(), "pid": a.and_then(Agent::pid), "pids": pids, "cgroup": cgroup, "state": "running", "uid": uid, "root": uid == Some(0)});
        if a.is_some_and(|a| a.proc.as_ref().is_some_and(|p| p.cgroup.is_none())) && adopt.is_some() {
            // Followed through /proc: a process that double-forks leaves the tree, its accounting and the kill.
            answer["warning"] = json!(
                "followed as a process tree, not a cgroup: a descendant that double-forks escapes accounting and the kill; adopt with move (--move) to contain it"
            );
        }
        Ok(answer)
    }

    /// Whether a process may be adopted: not pid 1, not allot itself or one of its
    /// ancestors (the tree would hold the governor), not a process of another agent.
    fn adoptable(&self, pid: u32) -> Result<(), ControlError> {
        let refuse = |why: String| Err(ControlError::Invalid { field: "pid", message: format!("pid {pid} cannot be adopted: {why}") });
        if pid <= 1 {
            return refuse("it is the init process (its tree is the whole machine)".into());
        }
        let proc_root = allot_sys::Roots::host().proc;
        let mut p = std::process::id();
        while p > 1 {
            if p == pid {
                return refuse("it is allot itself or one of its ancestors".into());
            }
            p = allot_sys::proc::stat(&proc_root, p).map_or(0, |s| s.ppid);
        }
        let dirs = self.backend.cgroup_dirs_of_pid(pid);
        if let Some(owner) = self.agents.owner_of(pid, dirs.as_deref()) {
            return refuse(format!("it belongs to agent {owner}"));
        }
        Ok(())
    }

    /// Spawn an agent's command in its cgroup with its backstops written first, and store it.
    pub(super) fn start_agent(&mut self, id: &AgentId) -> Result<(), StartError> {
        let _span = tracing::info_span!("agent", id = %id).entered();
        let now = self.clock.now();
        let incarnation = self.agents.incarnate();
        let socket = self.agents.socket.clone();
        // The group's totals and the agent's own limits are in the kernel before its command runs.
        let mut notes: Vec<Value> = self.write_group_totals(id).into_iter().collect();
        let limits = self.domain.ledger.quota(id).map(allot_core::backstops::agent);
        let Some(a) = self.agents.get_mut(id) else { return Ok(()) };
        a.channel.give_to(a.def.user).map_err(StartError::Failed)?;
        let mut env =
            vec![("ALLOT_AGENT_ID".to_owned(), id.to_string()), ("ALLOT_EVENTS_FILE".to_owned(), a.channel.path().display().to_string())];
        if let Some(sock) = socket {
            env.push(("ALLOT_SOCKET".to_owned(), sock.display().to_string()));
        }
        let mut written = Vec::new();
        let started = self
            .backend
            .start(&a.def, &env, &mut |act| {
                if let Some(b) = &limits {
                    written = super::intent::backstops(act, b);
                }
            })
            .map_err(StartError::Failed)?;
        notes.splice(0..0, written);
        let pid = started.leader.pid();
        a.proc = Some(started);
        a.working_set_at = None;
        a.lifecycle = Lifecycle::Live;
        a.holds = Holds::default();
        a.rates = super::agents::Rates::default();
        a.incarnation = incarnation;
        let quota = self.domain.ledger.quota(id).map_or(Value::Null, |q| serde_json::to_value(q).unwrap_or(Value::Null));
        let _ = a.channel.send("quota", json!({"quota": quota}), now.as_millis(), None);
        if let Err(e) = self.store_agent(id) {
            // Not recorded: stop it now rather than leave it running unknown to a restarted governor.
            let proc = self.agents.get_mut(id).and_then(|a| a.proc.take());
            self.backend.cleanup(proc.as_ref().and_then(|p| p.cgroup.as_ref()));
            return Err(StartError::Unrecorded(e));
        }
        self.publish_backstops(id, notes, true);
        self.note_oom_base(id);
        let cgroup = self.agents.get(id).map(Agent::cgroup_dirs).unwrap_or_default();
        let user = self.agents.get(id).and_then(|a| a.def.user);
        if user.is_some_and(|u| u.0 == 0) {
            tracing::warn!(agent = %id, "runs as root (asked for by name): it can leave its cgroup and act as the operator");
        }
        self.recorder.emit(
            now,
            events::AGENT_STARTED,
            Some(id.as_str()),
            json!({"pid": pid, "cgroup": cgroup, "mode": self.backend.mode(), "uid": user.map(|u| u.0), "gid": user.map(|u| u.1), "root": user.is_some_and(|u| u.0 == 0)}),
        );
        self.watch(id);
        tracing::info!(agent = %id, pid, incarnation, "started");
        Ok(())
    }

    /// Take over a running process as agent `id` (already registered).
    fn adopt_agent(&mut self, id: &AgentId, pid: u32, move_it: bool) -> Result<(), StartError> {
        let now = self.clock.now();
        let incarnation = self.agents.incarnate();
        let Some(a) = self.agents.get_mut(id) else { return Ok(()) };
        let started = self.backend.adopt_pid(&a.def, pid, move_it).map_err(StartError::Failed)?;
        a.proc = Some(started);
        a.working_set_at = None;
        a.lifecycle = Lifecycle::Live;
        a.incarnation = incarnation;
        self.store_agent(id).map_err(StartError::Unrecorded)?;
        self.apply_backstops(id);
        self.note_oom_base(id);
        let cgroup = self.agents.get(id).map(Agent::cgroup_dirs).unwrap_or_default();
        self.recorder.emit(now, events::AGENT_ADOPTED, Some(id.as_str()), json!({"pid": pid, "moved": move_it, "cgroup": cgroup}));
        self.watch(id);
        Ok(())
    }

    /// Store an agent as it is now: `starting` before its command runs (its
    /// cgroup already named, so recovery finds what a crash left there),
    /// `terminating` with the kill's deadline, else `running`; its quota as in
    /// force, its holds, its user. An error says the store could not record it
    /// (and is counted): a start is then refused, never half-known.
    pub(super) fn store_agent(&mut self, id: &AgentId) -> Result<(), String> {
        let Some(a) = self.agents.get(id) else { return Ok(()) };
        let adopted = a.def.command.is_empty();
        let quota = self.domain.ledger.quota(id).map(allot_store::dto::StoredQuota::from_core);
        let (state, terminating) = match (&a.lifecycle, a.kill_at) {
            (Lifecycle::Terminating(why), Some(at)) => {
                (AgentStateName::Terminating, Some(allot_store::dto::StoredTermination { reason: why.clone(), kill_at_ms: at.as_millis() }))
            }
            _ if a.proc.is_none() => (AgentStateName::Starting, None),
            _ => (AgentStateName::Running, None),
        };
        let spec = allot_store::dto::StoredSpec {
            command: if adopted { Vec::new() } else { a.def.command.clone() },
            priority: a.def.spec.priority.get(),
            quota: quota.unwrap_or_default(),
            adopted,
            holds: super::agents::stored_holds(&a.holds),
            user: a.def.user,
            terminating,
            overrides: Some(allot_store::dto::overrides_from_core(&a.def.spec.overrides)),
            pools: a.def.spec.pools.clone(),
            restartable: a.def.restartable,
        };
        let cgroup = match &a.proc {
            Some(_) => json!(a.cgroup_dirs()),
            None => json!(self.backend.cgroup_dirs(&a.def.spec.group, id.as_str())),
        };
        let stored = allot_store::StoredAgent {
            id: id.to_string(),
            group: a.def.spec.group.clone(),
            state: state.as_str().to_owned(),
            pid: a.pid(),
            cgroup,
            spec: serde_json::to_value(&spec).unwrap_or(Value::Null),
            exit: None,
            updated_ms: self.clock.now().as_millis(),
        };
        self.recorder.store.put_agent(&stored).map_err(|e| {
            tracing::error!(agent = %id, error = %e, "agent not stored");
            self.recorder.unrecorded(&e.to_string());
            e.to_string()
        })
    }

    /// Kernel notices for an agent: its exit, and its memory limits where the kernel can tell.
    /// An agent that cannot have the descriptors is sampled only, and the log says why.
    pub(super) fn watch(&mut self, id: &AgentId) {
        let Some(n) = &self.notifier else { return };
        let Some(a) = self.agents.map.get_mut(id) else { return };
        if a.proc.is_none() {
            return;
        }
        match self.backend.notification_files() {
            Ok(lease) => a.notify_fds = lease,
            Err(why) => {
                tracing::warn!(agent = %id, "no kernel notifications, sampling only: {why}");
                return;
            }
        }
        let Some(p) = a.proc.as_ref() else { return };
        let first_dir = p.cgroup.as_ref().and_then(|c| c.dirs.all().first().map(|d| d.to_path_buf()));
        let _ = n.process_exit(id.as_str(), p.leader.pid(), first_dir.as_deref());
        let Some(cg) = &p.cgroup else { return };
        let Some(l) = self.domain.ledger.quota(id).and_then(|q| q.limits.get(&Resource::Memory)) else { return };
        if let Some(d) = cg.v1(allot_sys::cgroup::tree::V1::Memory) {
            let _ = n.memory_threshold(id.as_str(), d, l.soft);
            let _ = n.memory_threshold(id.as_str(), d, l.hard);
        }
        if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("memory")) {
            let _ = n.memory_events(id.as_str(), d);
        }
    }

    /// Leaders that exited: record why (allot's termination, the kernel's
    /// OOM killer, or its own exit: see [`exit_cause`]), clean up, restart
    /// if the fleet says so.
    pub(super) fn reap(&mut self) {
        let now = self.clock.now();
        let exited: Vec<(AgentId, super::backend::Exit)> = self
            .agents
            .map
            .iter_mut()
            .filter_map(|(id, a)| a.proc.as_mut().and_then(|p| p.leader.try_wait()).map(|e| (id.clone(), e)))
            .collect();
        // Many exits at once (a stop, a host-wide kill) are recorded in one commit.
        let batch = exited.len() > 1 && self.recorder.begin_batch();
        for (id, exit) in exited {
            let Some(a) = self.agents.get(&id) else { continue };
            // Read before the cleanup removes its cgroup.
            let counters = self.backend.oom_counters(a.proc.as_ref().and_then(|p| p.cgroup.as_ref()), &a.def.spec.group);
            let Some(a) = self.agents.get_mut(&id) else { continue };
            let by_allot = match &a.lifecycle {
                Lifecycle::Terminating(why) => Some(why.clone()),
                _ => None,
            };
            let cause = exit_cause(by_allot.as_deref(), a.oom_base, counters);
            let (reason, data) = cause.describe(exit, &a.def.spec.group);
            a.exit_cause = Some(cause.name());
            let restart = match a.def.restart {
                Restart::OnFailure { max } if by_allot.is_none() && exit.failed() && a.restarts < max => {
                    a.restarts += 1;
                    Some(Duration::from_secs((1u64 << (a.restarts - 1).min(5)).min(30)))
                }
                _ => None,
            };
            let proc = a.proc.take();
            let incarnation = a.incarnation;
            self.backend.cleanup(proc.as_ref().and_then(|p| p.cgroup.as_ref()));
            self.forget(&id);
            match restart {
                Some(backoff) => self.schedule_restart(&id, incarnation, backoff, &reason, data, now),
                None => self.exited(&id, &reason, data, now),
            }
        }
        self.recorder.end_batch(batch);
    }

    /// Read the OOM counters of an agent's cgroup and its group's now, to compare at its exit.
    pub(super) fn note_oom_base(&mut self, id: &AgentId) {
        let Some(a) = self.agents.get(id) else { return };
        let base = self.backend.oom_counters(a.proc.as_ref().and_then(|p| p.cgroup.as_ref()), &a.def.spec.group);
        if let Some(a) = self.agents.get_mut(id) {
            a.oom_base = base;
            a.exit_cause = None;
        }
    }

    /// Forget an agent's policy state, alerts, timers and notices (its process is gone).
    fn forget(&mut self, id: &AgentId) {
        self.domain.policy.remove(id);
        self.domain.alerts.forget(id);
        let _ = self.domain.ledger.unregister(id);
        self.timers.forget(id);
        if let Some(n) = &self.notifier {
            n.forget(id.as_str());
        }
        if let Some(a) = self.agents.map.get_mut(id) {
            a.notify_fds = None;
        }
    }

    fn schedule_restart(&mut self, id: &AgentId, incarnation: u64, backoff: Duration, reason: &str, mut data: Value, now: Time) {
        let Some(a) = self.agents.get_mut(id) else { return };
        a.lifecycle = Lifecycle::Restarting;
        a.holds = Holds::default();
        a.usage.clear();
        let restarts = a.restarts;
        let _ = self.recorder.store.set_agent_state(id.as_str(), AgentStateName::Restarting, Some(reason), now.as_millis());
        data["restart_in_ms"] = json!(allot_core::time::duration_millis(backoff));
        data["restart"] = json!(restarts);
        self.recorder.emit(now, events::AGENT_EXITED, Some(id.as_str()), data);
        self.timers.restart(now.plus(backoff), id, incarnation);
    }

    /// Start an agent again after its backoff, if it is still the one that exited.
    pub(super) fn restart(&mut self, id: &AgentId, incarnation: u64, at: Time) {
        if !self.agents.current(id, incarnation).is_some_and(|a| a.lifecycle == Lifecycle::Restarting) {
            return;
        }
        if let Some(spec) = self.agents.get(id).map(|a| a.def.spec.clone()) {
            let _ = self.domain.ledger.register(spec);
        }
        if let Err(e) = self.start_agent(id) {
            self.mark_exited(id, &format!("could not restart: {e}"), at);
        }
    }

    pub(super) fn mark_exited(&mut self, id: &AgentId, reason: &str, now: Time) {
        self.exited(id, reason, json!({"reason": reason}), now);
    }

    /// Record an agent as exited, with the event's data (`reason`, and `cause` from a reap).
    fn exited(&mut self, id: &AgentId, reason: &str, data: Value, now: Time) {
        if let Some(a) = self.agents.get_mut(id) {
            a.lifecycle = Lifecycle::Exited(reason.to_owned());
            a.proc = None;
            a.holds = Holds::default();
            // An exited agent uses nothing: no last reading in `ps` or the metrics.
            a.usage.clear();
            a.io_from = None;
        }
        self.forget(id);
        let _ = self.recorder.store.set_agent_state(id.as_str(), AgentStateName::Exited, Some(reason), now.as_millis());
        self.recorder.emit(now, events::AGENT_EXITED, Some(id.as_str()), data);
        tracing::info!(agent = %id, reason, "exited");
    }

    /// The terminate grace of this incarnation ended: kill the tree (waiting off the loop).
    pub(super) fn grace_over(&mut self, id: &AgentId, incarnation: u64, at: Time) {
        if self.agents.current(id, incarnation).is_none_or(|a| a.proc.is_none()) {
            return;
        }
        let attempt = Attempt {
            agent: id.clone(),
            at,
            resource: "-".into(),
            action: "terminate".into(),
            topic: events::enforcement_topic("terminate"),
            data: json!({"stage": "kill"}),
            prefix: "grace over: ".into(),
            last_action: None,
            success: Outcome::Success,
            reply: None,
        };
        let applied = self.apply(Intent { agent: id.clone(), source: Source::Lifecycle, op: Op::Kill });
        self.conclude(attempt, applied);
    }
}

impl<B: Backend> Governor<B> {
    /// Change an agent's limits at run time: each field given is merged over
    /// the agent's current override of that resource (what earlier changes
    /// and its start gave is kept), the result is checked (soft <= hard <=
    /// burst; a 422 names the field at fault), stored (a restarted daemon
    /// takes the agent over with it) and in force in the kernel at once. The
    /// answer is the resulting quota.
    pub(super) fn set_limits(
        &mut self,
        agent: &str,
        overrides: std::collections::BTreeMap<Resource, allot_core::limits::LimitOverride>,
    ) -> Result<Value, ControlError> {
        let id = self.known(agent)?;
        let Some(a) = self.agents.get(&id) else { return Err(ControlError::NoAgent(agent.to_owned())) };
        let before = a.def.spec.clone();
        let mut spec = a.def.spec.clone();
        let group = self.domain.ledger.group(&spec.group).cloned();
        for (resource, change) in overrides {
            let field = format!("limits.{resource}");
            let base = group.as_ref().and_then(|g| g.limits.get(&resource));
            let current = spec.overrides.get(&resource).and_then(|o| o.window).or(base.and_then(|b| b.window));
            let burst_apart = spec.overrides.get(&resource).and_then(|o| o.burst).is_some() || base.is_some_and(|b| b.burst != b.hard);
            let merged = match spec.overrides.get(&resource) {
                // A change that gives every count may count in another window (the limit moves to it).
                _ if change.window.is_some() && change.restates_counts(burst_apart) => spec
                    .overrides
                    .get(&resource)
                    .map_or_else(|| change.clone(), |old| LimitOverride { burst: change.burst, ..old.updated_by(&change) }),
                None if base.is_none() => change.clone(),
                old => {
                    // A partial change written in another window is converted to the one the limit has.
                    let to = current.unwrap_or(allot_core::quantity::Window::Minute);
                    let change = change.in_window(to).ok_or_else(|| ControlError::InvalidAt {
                        field: field.clone(),
                        message: format!("a count of this change is more than this allot can count per {to}"),
                    })?;
                    let change = LimitOverride { window: current.map(|_| to), ..change };
                    old.map_or_else(|| change.clone(), |old| old.updated_by(&change))
                }
            };
            let limit = merged.merge_over(base, &field).map_err(|e| ControlError::InvalidAt { field: e.field, message: e.problem })?;
            if let Err(e) = limit.validate(&field) {
                let at = change.fault(&limit).map_or(field.clone(), |f| format!("{field}.{f}"));
                return Err(ControlError::InvalidAt { field: at, message: e.problem });
            }
            spec.overrides.insert(resource, merged);
        }
        let quota = self
            .domain
            .ledger
            .update_agent(spec.clone())
            .map_err(|e| ControlError::Invalid { field: "limits", message: e.to_string() })?
            .clone();
        if let Some(a) = self.agents.get_mut(&id) {
            a.def.spec = spec;
        }
        if self.agents.get(&id).is_some_and(|a| a.proc.is_some()) {
            if let Err(e) = self.store_agent(&id) {
                // Not recorded: not in force either (a restarted governor would not know it).
                let _ = self.domain.ledger.update_agent(before.clone());
                if let Some(a) = self.agents.get_mut(&id) {
                    a.def.spec = before;
                }
                return Err(ControlError::Unrecorded(e));
            }
        }
        self.apply_backstops(&id);
        let q = serde_json::to_value(&quota).unwrap_or(Value::Null);
        self.recorder.emit(self.clock.now(), events::QUOTA_CHANGED, Some(agent), json!({"quota": q}));
        Ok(q)
    }
}

/// Whose memory limit the kernel's OOM killer acted at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OomAt {
    /// The agent's own memory ceiling (the backstop at its burst limit).
    Agent(Option<u64>),
    /// Its group's memory total.
    Group(Option<u64>),
    /// Neither moved: a limit above them (allot's own cgroup, the host).
    Above,
}

/// What ended an agent's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ExitCause {
    /// allot terminated it (the reason given then).
    Allot(String),
    /// The kernel's OOM killer killed `kills` of its processes (the leader,
    /// or a process whose death ended it), at `at`.
    Oom {
        /// Processes of its cgroup the OOM killer killed since it started.
        kills: u64,
        /// Whose limit.
        at: OomAt,
    },
    /// Its own exit (or a signal from elsewhere).
    Own,
}

/// Why an agent's leader ended: allot's termination when it was terminating;
/// else the kernel's OOM killer when its cgroup's `oom_kill` counter grew
/// since its start (the limit: its own ceiling when it was reached, else
/// its group's total when that was, else one above both); else its own
/// exit. `base` and `now`: the (agent, group) OOM counters at its start and
/// at its exit. A limit counts as reached when the kernel counted a hit or
/// the cgroup's usage peak reached it (`OomCounters::limit_reached_since`):
/// a group's peak stays at its total once any member reached it, so a
/// later kill at a limit above both may be put on the group.
pub(super) fn exit_cause(
    by_allot: Option<&str>,
    base: (Option<allot_sys::cgroup::OomCounters>, Option<allot_sys::cgroup::OomCounters>),
    now: (Option<allot_sys::cgroup::OomCounters>, Option<allot_sys::cgroup::OomCounters>),
) -> ExitCause {
    if let Some(why) = by_allot {
        return ExitCause::Allot(why.to_owned());
    }
    let Some(agent) = now.0 else { return ExitCause::Own };
    let kills = agent.oom_kills.saturating_sub(base.0.map_or(0, |b| b.oom_kills));
    if kills == 0 {
        return ExitCause::Own;
    }
    let at = match now.1 {
        _ if agent.limit_reached_since(base.0.as_ref()) => OomAt::Agent(agent.limit),
        Some(g) if g.limit_reached_since(base.1.as_ref()) => OomAt::Group(g.limit),
        _ => OomAt::Above,
    };
    ExitCause::Oom { kills, at }
}

impl ExitCause {
    /// Its wire name (`cause` of `agent.exited`, `exit_cause` of the agent's status).
    pub(super) fn name(&self) -> &'static str {
        match self {
            ExitCause::Allot(_) => "allot",
            ExitCause::Oom { .. } => "oom_kill",
            ExitCause::Own => "exit",
        }
    }

    /// The reason text and the data of the `agent.exited` event.
    pub(super) fn describe(&self, exit: super::backend::Exit, group: &str) -> (String, Value) {
        let bytes = |b: Option<u64>| {
            b.map_or_else(
                || "?".to_owned(),
                |b| allot_core::quantity::format(allot_core::Unit::Bytes, allot_core::quantity::Quantity::new(b)),
            )
        };
        let reason = match self {
            ExitCause::Allot(why) => format!("{exit}: {why}"),
            ExitCause::Own => format!("{exit} (its own exit)"),
            ExitCause::Oom { kills, at } => {
                let whose = match at {
                    OomAt::Agent(l) => format!("at its own memory ceiling of {}", bytes(*l)),
                    OomAt::Group(l) => format!("at the memory total of its group {group} ({})", bytes(*l)),
                    OomAt::Above => "at a memory limit above its own and its group's (allot's own cgroup or the host)".to_owned(),
                };
                match exit {
                    super::backend::Exit::Signal(9) => format!("{exit}: killed by the kernel's OOM killer {whose}"),
                    _ => format!("{exit} after the kernel's OOM killer killed {kills} of its processes {whose}"),
                }
            }
        };
        let mut data = json!({"reason": reason, "cause": self.name()});
        if let ExitCause::Oom { kills, at } = self {
            let (limit, bytes) = match at {
                OomAt::Agent(l) => ("agent", *l),
                OomAt::Group(l) => ("group", *l),
                OomAt::Above => ("above", None),
            };
            data["oom"] = json!({"limit": limit, "limit_bytes": bytes, "kills": kills, "group": group});
        }
        (reason, data)
    }
}
