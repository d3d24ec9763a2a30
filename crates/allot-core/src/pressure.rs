//! Host memory pressure: which agent to suspend when the host runs short and
//! which to let go again once memory is back (SPEC section 5).
//!
//! Pure: the caller reads the host's memory and its agents' usage, calls
//! [`step`] once per check, and carries out the one [`PressureStep`] it gets.
//! A quarter of the host's memory is kept for the system ([`reserve`]); an
//! agent is released only when memory is 20 % above that reserve, so the guard
//! does not flap around one threshold.

use crate::ledger::eviction_order;
use crate::quota::AgentId;

/// The host's memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMemory {
    /// All of it (MemTotal).
    pub total: u64,
    /// What the kernel could give out now (MemAvailable).
    pub available: u64,
}

/// A running agent not already suspended for host pressure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The agent.
    pub agent: AgentId,
    /// Its priority (1..10, higher is more important).
    pub priority: u8,
    /// Its memory usage in bytes.
    pub memory: u64,
    /// Its memory soft limit in bytes (0 when it has none).
    pub soft: u64,
}

impl Candidate {
    /// How far the agent's memory is over its soft limit (0 when under).
    pub fn excess(&self) -> u64 {
        self.memory.saturating_sub(self.soft)
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PressureStep {
    /// Freeze this agent: available memory is under the reserve.
    Suspend {
        /// The agent to freeze.
        victim: AgentId,
        /// Available memory in bytes.
        available: u64,
        /// The reserve in bytes.
        reserve: u64,
    },
    /// Thaw this agent: memory is back above the reserve plus 20 %.
    Release {
        /// The agent to thaw.
        agent: AgentId,
        /// Available memory in bytes.
        available: u64,
        /// The reserve in bytes.
        reserve: u64,
    },
    /// Nothing to do.
    Nothing,
}

/// The memory kept for the system: a quarter of the total (the reference design's number).
pub fn reserve(total: u64) -> u64 {
    total / 4
}

/// The available memory above which a suspended agent is released: the
/// reserve plus a fifth of it (20 % hysteresis).
pub fn release_above(total: u64) -> u64 {
    let r = reserve(total);
    r.saturating_add(r / 5)
}

/// One step: under the reserve, suspend the first of `candidates` (running agents not already held) in eviction order
/// (lowest priority first, then largest excess of memory over soft, then id); above reserve + 20 % (hysteresis),
/// release the most recently suspended of `held` (in suspension order, last = most recent); else nothing.
///
/// Candidates that are in `held` anyway are skipped, so a victim is never an
/// agent already suspended.
pub fn step(mem: HostMemory, candidates: &[Candidate], held: &[AgentId]) -> PressureStep {
    let reserve = reserve(mem.total);
    let available = mem.available;
    if available < reserve {
        let ranked: Vec<(AgentId, u8, u64)> =
            candidates.iter().filter(|c| !held.contains(&c.agent)).map(|c| (c.agent.clone(), c.priority, c.excess())).collect();
        match eviction_order(&ranked).into_iter().next() {
            Some(victim) => PressureStep::Suspend { victim, available, reserve },
            None => PressureStep::Nothing,
        }
    } else if available > release_above(mem.total) {
        match held.last() {
            Some(agent) => PressureStep::Release { agent: agent.clone(), available, reserve },
            None => PressureStep::Nothing,
        }
    } else {
        PressureStep::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    fn cand(agent: &str, priority: u8, memory: u64, soft: u64) -> Candidate {
        Candidate { agent: id(agent), priority, memory, soft }
    }

    #[test]
    fn the_reserve_is_a_quarter_and_release_needs_twenty_percent_more() {
        assert_eq!(reserve(16 * GB), 4 * GB);
        assert_eq!(release_above(1000), 300);
        assert_eq!(reserve(u64::MAX), u64::MAX / 4);
        assert_eq!(release_above(u64::MAX), u64::MAX / 4 + u64::MAX / 20);
    }

    #[test]
    fn under_the_reserve_the_lowest_priority_largest_excess_goes_first() {
        let mem = HostMemory { total: 16 * GB, available: 3 * GB };
        let cs = [cand("vip", 9, 8 * GB, 0), cand("small", 2, 2 * GB, GB), cand("big", 2, 5 * GB, GB), cand("mid", 5, GB, 0)];
        assert_eq!(step(mem, &cs, &[]), PressureStep::Suspend { victim: id("big"), available: 3 * GB, reserve: 4 * GB });
        assert_eq!(step(mem, &cs, &[id("big")]), PressureStep::Suspend { victim: id("small"), available: 3 * GB, reserve: 4 * GB });
        assert_eq!(step(mem, &[], &[id("big")]), PressureStep::Nothing, "nobody left to suspend");
    }

    #[test]
    fn usage_under_soft_counts_as_no_excess_and_ties_go_by_id() {
        let mem = HostMemory { total: 8 * GB, available: 0 };
        let cs = [cand("b", 3, GB, 2 * GB), cand("a", 3, 0, 0)];
        assert_eq!(cs[0].excess(), 0);
        assert!(matches!(step(mem, &cs, &[]), PressureStep::Suspend { victim, .. } if victim == id("a")));
    }

    #[test]
    fn release_the_most_recent_only_above_the_hysteresis() {
        let held = [id("first"), id("second")];
        let total = 10 * GB;
        let between = HostMemory { total, available: release_above(total) };
        assert_eq!(step(between, &[], &held), PressureStep::Nothing, "at reserve + 20 % exactly: wait");
        let back = HostMemory { total, available: release_above(total) + 1 };
        assert!(matches!(step(back, &[], &held), PressureStep::Release { agent, .. } if agent == id("second")));
        assert_eq!(step(back, &[], &[]), PressureStep::Nothing);
        let at_reserve = HostMemory { total, available: reserve(total) };
        assert_eq!(step(at_reserve, &[cand("x", 1, GB, 0)], &held), PressureStep::Nothing);
    }
}
