//! The agents part of the governor: each agent's definition, its process
//! (when started), its lifecycle, who holds it frozen or throttled, its
//! latest usage and rates, and its channel. Only the loop mutates it.

use super::backend::Started;
use super::channel::Channel;
use crate::fleet::AgentDef;
use allot_core::holds::Holds;
use allot_core::rate::Rate;
use allot_core::{AgentId, Resource};
use std::collections::BTreeMap;
use std::path::PathBuf;

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

    /// The agent whose tree or cgroup holds `pid`.
    pub(super) fn owner_of(&self, pid: u32) -> Option<&AgentId> {
        self.map
            .iter()
            .find(|(_, a)| a.proc.as_ref().is_some_and(|p| p.leader.pid() == pid || p.actuator.pids().is_ok_and(|ps| ps.contains(&pid))))
            .map(|(id, _)| id)
    }
}
