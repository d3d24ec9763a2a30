//! The agents part of the governor: each agent's definition, its process
//! (when started), its lifecycle, who holds it frozen or throttled, its
//! latest usage and rates, and its channel. Only the loop mutates it.

use super::backend::Started;
use super::channel::Channel;
use crate::fleet::AgentDef;
use allot_core::holds::{Holder, Holds, Throttle};
use allot_core::rate::Rate;
use allot_core::{AgentId, Resource};
use allot_store::dto::StoredHold;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an agent is in its life. Frozen and throttled are not lifecycle
/// states: they follow from the agent's holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Defined, not started yet.
    Starting,
    /// Its process runs.
    Live,
    /// Told to stop; killed when its grace ends.
    Terminating(String),
    /// Waiting for a restart.
    Restarting,
    /// Gone, with the reason.
    Exited(String),
}

/// Counter rates of one agent.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rates {
    pub(super) cpu: Rate,
    pub(super) io: Rate,
    pub(super) net: Rate,
}

/// One governed agent.
pub(super) struct Agent {
    pub(super) def: AgentDef,
    pub(super) proc: Option<Started>,
    pub(super) lifecycle: Lifecycle,
    pub(super) holds: Holds,
    /// Which start of this agent id this is: timers of an earlier one never act on a later one.
    pub(super) incarnation: u64,
    pub(super) rates: Rates,
    pub(super) usage: BTreeMap<Resource, u64>,
    pub(super) last_action: String,
    pub(super) restarts: u32,
    pub(super) channel: Channel,
    /// The kernel refused memory.high for this agent (cgroup v1): memory throttles use the cpu limit.
    pub(super) no_memory_high: bool,
    /// When a termination in its grace period kills it (stored, so a restarted governor carries it out).
    pub(super) kill_at: Option<allot_core::Time>,
    /// The walk measuring its workspace (its `workdir`), when it has one.
    pub(super) disk: Option<allot_sys::probe::DiskWalk>,
    /// Where its disk_io reading comes from, once read.
    pub(super) io_from: Option<allot_sys::probe::IoFrom>,
    /// Its memory as the cgroup counts it (page cache included), at the last sample.
    pub(super) memory_raw: u64,
    /// When its inactive file cache was last read (`allot_core::working_set`); reset with each new probe.
    pub(super) working_set_at: Option<allot_core::Time>,
    /// The OOM counters of its cgroup and its group's cgroup when it started
    /// (or was taken over): an exit compares them with a reading then.
    pub(super) oom_base: (Option<allot_sys::cgroup::OomCounters>, Option<allot_sys::cgroup::OomCounters>),
    /// What ended it (`exit`, `oom_kill`, `allot`), once it exited.
    pub(super) exit_cause: Option<&'static str>,
    /// The descriptors its kernel notifications hold, while it is watched.
    pub(super) notify_fds: Option<allot_sys::probe::FdLease>,
}

impl Agent {
    pub(super) fn new(def: AgentDef, channel: Channel) -> Self {
        Agent {
            def,
            proc: None,
            lifecycle: Lifecycle::Starting,
            holds: Holds::default(),
            incarnation: 0,
            rates: Rates::default(),
            usage: BTreeMap::new(),
            last_action: String::new(),
            restarts: 0,
            channel,
            no_memory_high: false,
            kill_at: None,
            disk: None,
            io_from: None,
            memory_raw: 0,
            working_set_at: None,
            oom_base: (None, None),
            exit_cause: None,
            notify_fds: None,
        }
    }

    /// The state name shown to users: lifecycle first, then the holds.
    pub(super) fn state_name(&self) -> &'static str {
        match &self.lifecycle {
            Lifecycle::Starting => "starting",
            Lifecycle::Terminating(_) => "terminating",
            Lifecycle::Restarting => "restarting",
            Lifecycle::Exited(_) => "exited",
            Lifecycle::Live if self.holds.is_frozen() => "suspended",
            Lifecycle::Live if self.holds.is_throttled() => "throttled",
            Lifecycle::Live => "running",
        }
    }

    /// The state with the exit reason, for the live view and the summary.
    pub(super) fn state_text(&self) -> String {
        match &self.lifecycle {
            Lifecycle::Exited(why) => why.clone(),
            _ => self.state_name().to_owned(),
        }
    }

    pub(super) fn exit_reason(&self) -> Option<&str> {
        match &self.lifecycle {
            Lifecycle::Exited(why) => Some(why),
            _ => None,
        }
    }

    pub(super) fn is_exited(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Exited(_))
    }

    /// Whether it can be sampled and acted on.
    pub(super) fn is_active(&self) -> bool {
        self.proc.is_some() && matches!(self.lifecycle, Lifecycle::Live | Lifecycle::Terminating(_))
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.leader.pid())
    }

    /// Its cgroup directories, as text.
    pub(super) fn cgroup_dirs(&self) -> Vec<String> {
        self.proc
            .as_ref()
            .and_then(|p| p.cgroup.as_ref())
            .map(|c| c.dirs.all().iter().map(|d| d.display().to_string()).collect())
            .unwrap_or_default()
    }
}

/// Every agent, the incarnation counter and where their channels live.
pub(super) struct Agents {
    pub(super) map: BTreeMap<AgentId, Agent>,
    next_incarnation: u64,
    pub(super) channel_dir: PathBuf,
    pub(super) socket: Option<PathBuf>,
}

impl Agents {
    pub(super) fn new(channel_dir: PathBuf, socket: Option<PathBuf>) -> Self {
        Agents { map: BTreeMap::new(), next_incarnation: 1, channel_dir, socket }
    }

    pub(super) fn get(&self, id: &AgentId) -> Option<&Agent> {
        self.map.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &AgentId) -> Option<&mut Agent> {
        self.map.get_mut(id)
    }

    /// The agent, if `incarnation` is still the current one.
    pub(super) fn current(&mut self, id: &AgentId, incarnation: u64) -> Option<&mut Agent> {
        self.map.get_mut(id).filter(|a| a.incarnation == incarnation)
    }

    /// A fresh incarnation number.
    pub(super) fn incarnate(&mut self) -> u64 {
        let n = self.next_incarnation;
        self.next_incarnation += 1;
        n
    }

    pub(super) fn ids(&self) -> Vec<AgentId> {
        self.map.keys().cloned().collect()
    }

    /// The agent whose tree or cgroup holds `pid`; `dirs` are the cgroup
    /// directories that hold it (`Backend::cgroup_dirs_of_pid`), when known:
    /// an agent with a cgroup is then matched by the directory its pids are
    /// read from (`AgentCgroup::pids`) alone, compared as bytes (no file read
    /// per agent; a process may sit in a sub-cgroup of its agent's), and only
    /// agents followed through `/proc` list their processes.
    pub(super) fn owner_of(&self, pid: u32, dirs: Option<&[PathBuf]>) -> Option<&AgentId> {
        use std::os::unix::ffi::OsStrExt;
        let live = || self.map.iter().filter_map(|(id, a)| a.proc.as_ref().map(|p| (id, p)));
        if let Some((id, _)) = live().find(|(_, p)| p.leader.pid() == pid) {
            return Some(id);
        }
        let within = |inner: &Path, outer: &Path| {
            let (i, o) = (inner.as_os_str().as_bytes(), outer.as_os_str().as_bytes());
            i.starts_with(o) && (i.len() == o.len() || i[o.len()] == b'/')
        };
        let holds = |p: &Started| match (dirs, p.cgroup.as_ref().and_then(|cg| cg.dirs.first())) {
            (Some(dirs), Some(d)) => dirs.iter().any(|pd| within(pd, d)),
            _ => p.actuator.pids().is_ok_and(|ps| ps.contains(&pid)),
        };
        live().find(|(_, p)| holds(p)).map(|(id, _)| id)
    }
}

/// The holds as stored.
pub(super) fn stored_holds(h: &Holds) -> Vec<StoredHold> {
    let mut holders = h.freeze_holders();
    holders.extend(h.throttle_holders().into_iter().filter(|t| !h.holds_freeze(t)));
    holders
        .into_iter()
        .map(|holder| {
            let t = h.throttle_of(&holder);
            StoredHold {
                holder: holder.wire_name(),
                freeze: h.holds_freeze(&holder),
                throttle: t.is_some(),
                cpu_millicores: t.and_then(|t| t.cpu_millicores),
                memory_high: t.and_then(|t| t.memory_high),
            }
        })
        .collect()
}

/// The stored holds a new governor stands behind: the operator's and host
/// pressure's. The policy's die with the policy state of the governor that
/// set them (it re-decides from fresh samples); they are returned apart.
pub(super) fn restored_holds(stored: &[StoredHold]) -> (Holds, Vec<String>) {
    let mut holds = Holds::default();
    let mut dropped = Vec::new();
    for s in stored {
        match Holder::from_wire_name(&s.holder) {
            Some(h) if !h.is_policy() => {
                if s.freeze {
                    holds.freeze(h.clone());
                }
                if s.throttle {
                    holds.throttle(h, Throttle { cpu_millicores: s.cpu_millicores, memory_high: s.memory_high });
                }
            }
            _ => dropped.push(s.holder.clone()),
        }
    }
    (holds, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_core::Resource;

    #[test]
    fn holds_round_trip_and_the_policys_are_dropped_on_restore() {
        let mut h = Holds::default();
        h.freeze(Holder::Policy(Resource::Memory));
        h.freeze(Holder::Operator);
        h.throttle(Holder::Operator, Throttle { cpu_millicores: Some(50), memory_high: None });
        h.throttle(Holder::HostPressure, Throttle { cpu_millicores: None, memory_high: Some(1 << 20) });
        let stored = stored_holds(&h);
        assert_eq!(stored.len(), 3, "{stored:?}");
        let (back, dropped) = restored_holds(&stored);
        assert_eq!(dropped, ["policy:memory"]);
        assert_eq!(back.freeze_holders(), [Holder::Operator]);
        assert_eq!(back.throttle_of(&Holder::Operator), Some(Throttle { cpu_millicores: Some(50), memory_high: None }));
        assert_eq!(back.throttle_of(&Holder::HostPressure), Some(Throttle { cpu_millicores: None, memory_high: Some(1 << 20) }));
    }
}
