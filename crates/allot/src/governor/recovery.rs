//! What a previous governor left: the daemon loads the groups created or
//! changed through its API, takes live agents over (same processes, cgroups
//! and stored quota, with their own overrides) and records the escalations that
//! died with the old governor's timers as cancelled; whatever cannot be
//! taken over, and everything under `allot up`, is stopped and recorded.

use super::agents::{Agent, Lifecycle};
use super::channel::Channel;
use super::record::Enforcement;
use super::{Backend, Error, Governor};
use crate::fleet::{AgentDef, Restart};
use allot_core::{AgentId, AgentSpec, Time, events};
use allot_store::{AgentStateName, Outcome, Stage, StoredAgent};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

impl<B: Backend> Governor<B> {
    /// The groups created or changed through the API of a previous daemon,
    /// into the ledger before any agent's stored quota is resolved against
    /// them: they win over the fleet file's and the built-in definitions of
    /// the same name. One that does not convert is left out, with a warning.
    pub(super) fn load_stored_groups(&mut self) {
        let stored = match self.recorder.store.groups() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "stored groups not loaded");
                return;
            }
        };
        for sg in stored {
            let g = match sg.to_core() {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(group = %sg.name, error = %e, "stored group not loaded");
                    continue;
                }
            };
            let ledger = &mut self.domain.ledger;
            let res = if ledger.group(&g.name).is_some() { ledger.set_group(g.clone()) } else { ledger.add_group(g.clone()) };
            match res {
                Ok(()) => tracing::info!(group = %g.name, "group as created or changed through the API (stored)"),
                Err(e) => tracing::warn!(group = %g.name, error = %e, "stored group not loaded"),
            }
        }
    }

    /// Take over the agents a previous run left running. Those that cannot
    /// be taken over are left to `recover_leftovers`, which stops them.
    pub(super) fn readopt_leftovers(&mut self) -> Result<(), Error> {
        let now = self.clock.now();
        for a in self.recorder.store.agents()? {
            if a.state == AgentStateName::Exited.as_str() {
                continue;
            }
            if let Err(why) = self.readopt(&a, now) {
                tracing::warn!(agent = %a.id, "cannot take over: {why}; stopping what is left of it");
            }
        }
        Ok(())
    }

    fn readopt(&mut self, a: &StoredAgent, now: Time) -> Result<(), String> {
        let pid = a.pid.ok_or("no pid stored")?;
        let dirs = a.cgroup_dirs();
        let stored = a.spec().map_err(|e| e.to_string())?;
        let id = AgentId::new(a.id.clone()).map_err(|e| e.to_string())?;
        let mut spec = AgentSpec::new(id.clone(), a.group.clone());
        spec.priority = allot_core::Priority::new(i64::from(stored.priority)).map_err(|e| e.to_string())?;
        spec.overrides = stored.quota.overrides().map_err(|e| e.to_string())?;
        spec.custom_handler = stored.quota.to_core(&id).ok().and_then(|q| q.custom_handler);
        if let Some(bad) = stored.pools.iter().find(|p| !allot_core::group::valid_group_name(p)) {
            return Err(format!("stored pool name {bad:?} is not valid"));
        }
        spec.pools = stored.pools.clone();
        // Its own overrides (field by field) when they give back the stored
        // quota over the group as it is now, so that later changes of one
        // field or of the group merge as before the restart; else every
        // field of the stored quota is pinned (rows of earlier versions, or
        // a group the fleet file changed meanwhile).
        if let Some(Ok(own)) = stored.overrides.as_ref().map(allot_store::dto::overrides_to_core) {
            let candidate = AgentSpec { overrides: own, ..spec.clone() };
            let group = self.domain.ledger.group(&a.group);
            let same = group.and_then(|g| allot_core::quota::resolve(g, &candidate, &a.id).ok()) == stored.quota.to_core(&id).ok();
            if same {
                spec = candidate;
            }
        }
        // The stored quota wins over the fleet file's: it may have been changed at run time.
        let ledger = &mut self.domain.ledger;
        let registered =
            if ledger.quota(&id).is_some() { ledger.update_agent(spec.clone()).is_ok() } else { ledger.register(spec.clone()).is_ok() };
        if !registered {
            return Err(format!("its stored quota no longer resolves (group {:?})", a.group));
        }
        let started = match self.backend.adopt(&dirs, pid) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.domain.ledger.unregister(&id);
                return Err(format!("pid {pid}: {e}"));
            }
        };
        let def = AgentDef {
            spec,
            command: stored.command,
            env: BTreeMap::new(),
            workdir: None,
            restart: Restart::Never,
            notify_signal: None,
            user: stored.user,
            restartable: stored.restartable,
        };
        let channel = Channel::reopen(&self.agents.channel_dir, id.as_str(), None)?;
        let mut agent = Agent::new(def, channel);
        let (holds, dropped) = super::agents::restored_holds(&stored.holds);
        agent.holds = holds;
        agent.proc = Some(started);
        agent.working_set_at = None;
        agent.lifecycle = Lifecycle::Live;
        agent.last_action = "re-adopted".into();
        agent.incarnation = self.agents.incarnate();
        let incarnation = agent.incarnation;
        // A termination in its grace period when the previous governor died is carried out, on its deadline.
        let resumed = stored.terminating.map(|t| {
            let at = Time::from_millis(t.kill_at_ms).max(now);
            agent.lifecycle = Lifecycle::Terminating(t.reason.clone());
            agent.kill_at = Some(at);
            agent.last_action = format!("terminating ({})", t.reason);
            self.timers.kill(at, &id, incarnation);
            json!({"reason": t.reason, "kill_at_ms": at.as_millis()})
        });
        self.agents.map.insert(id.clone(), agent);
        self.note_oom_base(&id);
        let kept = super::agents::stored_holds(&self.agents.get(&id).map(|a| a.holds.clone()).unwrap_or_default());
        let data = json!({"pid": pid, "cgroup": dirs, "holds_kept": kept.iter().map(|h| &h.holder).collect::<Vec<_>>(), "holds_released": dropped, "termination_resumed": resumed});
        self.recorder.emit(now, events::AGENT_READOPTED, Some(id.as_str()), data);
        self.resume_pending(&id, now);
        Ok(())
    }

    /// Write the kept holds of an agent taken over (and lift what the policy's dropped holds left in the kernel).
    pub(super) fn reconcile(&mut self, id: &AgentId) {
        let attempt = super::settle::Attempt {
            agent: id.clone(),
            at: self.clock.now(),
            resource: "-".into(),
            action: "restore".into(),
            topic: events::enforcement_topic("restore"),
            data: json!({"takeover": true}),
            prefix: "taken over: holds kept written to the kernel: ".into(),
            last_action: Some("re-adopted".into()),
            success: Outcome::Success,
            reply: None,
        };
        let applied = self.apply(super::intent::Intent {
            agent: id.clone(),
            source: super::intent::Source::Lifecycle,
            op: super::intent::Op::Reconcile,
        });
        self.conclude(attempt, applied);
    }

    /// Escalations the previous governor had scheduled and neither carried
    /// out nor cancelled are resumed with their deadlines: at the first fresh
    /// sample of their resource the policy carries them out on time while the
    /// violation holds, or cancels them (recorded) when it has cleared. One
    /// whose record lacks a deadline is recorded as cancelled.
    fn resume_pending(&mut self, id: &AgentId, now: Time) {
        let Ok(open) = self.recorder.store.open_escalations_due(id.as_str()) else { return };
        for (resource, action, due) in open {
            let parsed = (resource.parse::<allot_core::Resource>().ok(), action.parse::<allot_core::Action>().ok(), due);
            if let (Some(r), Some(a), Some(due)) = parsed {
                self.domain.restored.insert((id.clone(), r), (a, Time::from_millis(due)));
                let data = json!({"resource": resource, "action": action, "due_ms": due, "resumed": true});
                self.recorder.emit(now, &events::enforcement_topic("resumed"), Some(id.as_str()), data);
                continue;
            }
            let detail = "the governor restarted and the escalation's deadline is not on record; the policy re-decides from fresh samples";
            let data = json!({"resource": resource, "action": action, "outcome": "cancelled", "detail": detail, "restart": true});
            self.recorder.enforcement(Enforcement {
                at: now,
                agent: id.as_str(),
                resource: &resource,
                action: &action,
                stage: Stage::Done,
                outcome: Outcome::Cancelled,
                detail,
                topic: &events::enforcement_topic("cancelled"),
                data,
            });
        }
    }

    /// Stop agents that a previous run (killed before it could stop them)
    /// left running, so that none keeps running unnoticed.
    pub(super) fn recover_leftovers(&mut self) -> Result<(), Error> {
        let now = self.clock.now();
        for a in self.recorder.store.agents()? {
            if a.state == AgentStateName::Exited.as_str() || self.agents.map.keys().any(|id| id.as_str() == a.id) {
                continue;
            }
            let dirs = a.cgroup_dirs();
            let killed = match allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, allot_sys::actuate::SETTLE_TIMEOUT) {
                Ok((_, pids)) => pids,
                Err(e) => {
                    tracing::warn!(agent = %a.id, error = %e, "leftover processes could not all be stopped");
                    Vec::new()
                }
            };
            let reason = format!("left by a previous allot run that did not stop cleanly; {} process(es) stopped", killed.len());
            self.recorder.store.set_agent_state(&a.id, AgentStateName::Exited, Some(&reason), now.as_millis())?;
            self.recorder.emit(now, events::AGENT_EXITED, Some(&a.id), json!({"reason": reason, "pids": killed, "recovered": true}));
        }
        self.recover_unknown_cgroups()
    }

    /// Stop what runs in the agent cgroups of allot's tree that no stored
    /// agent still running owns (an exited agent's cleanup cut short by a
    /// crash, say), remove them and record it; then remove the group
    /// directories left empty. Nothing runs in allot's cgroups unnoticed.
    fn recover_unknown_cgroups(&mut self) -> Result<(), Error> {
        let now = self.clock.now();
        let mut known: Vec<PathBuf> = self
            .recorder
            .store
            .agents()?
            .iter()
            .filter(|a| a.state != AgentStateName::Exited.as_str())
            .flat_map(StoredAgent::cgroup_dirs)
            .collect();
        known.extend(self.agents.map.values().flat_map(Agent::cgroup_dirs).map(PathBuf::from));
        // One agent's directories in every hierarchy together: `<group>/<agent>`.
        let mut unknown: BTreeMap<(String, String), Vec<PathBuf>> = BTreeMap::new();
        for dir in self.backend.unknown_cgroups(&known) {
            let name = |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            unknown.entry((name(dir.parent()), name(Some(&dir)))).or_default().push(dir);
        }
        for ((group, name), dirs) in unknown {
            let (killed, error) = match allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, allot_sys::actuate::SETTLE_TIMEOUT) {
                Ok((_, pids)) => (pids, None),
                Err(e) => {
                    tracing::warn!(cgroup = ?dirs, error = %e, "processes in an unknown cgroup could not all be stopped");
                    (Vec::new(), Some(e.to_string()))
                }
            };
            let reason = format!(
                "a cgroup of allot's tree that no running agent owns (left by an earlier run); {} process(es) stopped",
                killed.len()
            );
            tracing::warn!(group, agent = name, pids = ?killed, "{reason}");
            let agent = AgentId::new(name.clone()).ok();
            let data = json!({"reason": reason, "pids": killed, "recovered": true, "unknown": true, "group": group, "name": name, "cgroup": dirs, "error": error});
            self.recorder.emit(now, events::AGENT_EXITED, agent.as_ref().map(AgentId::as_str), data);
        }
        for g in self.backend.remove_empty_groups() {
            tracing::info!(cgroup = %g.display(), "empty group cgroup of an earlier run removed");
        }
        Ok(())
    }
}
