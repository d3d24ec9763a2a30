//! Kernel backstops: the limits the kernel holds for an agent and its group
//! from the start, so that a spike between two samples cannot take the host
//! down before the policy reacts.
//!
//! Pure: these functions compute the values; the caller writes them through
//! its actuators and reports each outcome.
//!
//! `pids.max` counts tasks (threads), so it backs the `threads` limit. When
//! only `processes` is limited, the processes limit is written as a task
//! ceiling: a process has at least one task, so the kernel never refuses a
//! process the limit allows unless that agent's processes run several
//! threads (then the kernel stops new threads and processes at that many
//! tasks; give the agent a `threads` limit to set the ceiling apart). The
//! same holds for a group's totals.

use crate::group::QuotaGroup;
use crate::limits::Action;
use crate::quota::Quota;
use crate::resource::Resource;
use serde::Serialize;
use std::collections::BTreeMap;

/// The resources whose group totals the kernel holds on the group's cgroup
/// (processes and threads both on `pids.max`: threads when the group totals them).
pub const GROUP_RESOURCES: [Resource; 4] = [Resource::Memory, Resource::Processes, Resource::Threads, Resource::Cpu];

/// The backstop values for one agent's cgroup; `None` leaves that file alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentBackstops {
    /// `cpu.weight` (v2 scale), from the agent's priority.
    pub cpu_weight: u64,
    /// The memory ceiling (`memory.max`), at the burst limit.
    pub memory_max: Option<u64>,
    /// `memory.high`, at the hard limit.
    pub memory_high: Option<u64>,
    /// `pids.max` (tasks), from the threads limit when there is one, else the
    /// processes limit as a task ceiling: at the burst limit, else at hard.
    pub pids_max: Option<u64>,
}

/// cpu weight from the priority (Priority::cpu_weight); memory ceiling at burst when memory's burst > hard;
/// memory.high at hard when memory's action is throttle; pids.max whenever threads or processes are limited
/// (threads first: pids.max counts tasks), at burst when burst > hard and else at hard (a fork bomb outruns
/// any sampling: the kernel must stop it at the limit).
pub fn agent(q: &Quota) -> AgentBackstops {
    let memory = q.limits.get(&Resource::Memory);
    let processes = q.limits.get(&Resource::Threads).or_else(|| q.limits.get(&Resource::Processes));
    AgentBackstops {
        cpu_weight: q.priority.cpu_weight(),
        memory_max: memory.filter(|l| l.burst > l.hard).map(|l| l.burst),
        memory_high: memory.filter(|l| l.action == Action::Throttle).map(|l| l.hard),
        pids_max: processes.map(|l| l.burst.max(l.hard)),
    }
}

/// The group totals the kernel holds on the group cgroup: QuotaGroup::effective_totals(members) restricted to
/// memory, threads or processes (one `pids.max`: threads when the group totals them) and cpu.
pub fn group(g: &QuotaGroup, members: usize) -> BTreeMap<Resource, u64> {
    let mut t: BTreeMap<Resource, u64> = g.effective_totals(members).into_iter().filter(|(r, _)| GROUP_RESOURCES.contains(r)).collect();
    if t.contains_key(&Resource::Threads) {
        t.remove(&Resource::Processes);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{ScalingPolicy, builtin_groups};
    use crate::limits::Limit;
    use crate::quota::{AgentId, AgentSpec, Priority, resolve};

    fn quota(group: &str) -> Quota {
        let g = builtin_groups().into_iter().find(|g| g.name == group).unwrap();
        resolve(&g, &AgentSpec::new(AgentId::new("a").unwrap(), group), "agents.a").unwrap()
    }

    #[test]
    fn builtin_groups_get_weight_and_memory_high_only_where_they_throttle() {
        let standard = agent(&quota("standard_agent"));
        assert_eq!(standard, AgentBackstops { cpu_weight: 100, memory_max: None, memory_high: Some(500_000_000), pids_max: Some(100) });
        let light = agent(&quota("lightweight_agent"));
        assert_eq!(light.memory_high, None, "memory action is warn");
        assert!(light.pids_max.is_some(), "pids.max is always set where processes are limited");
        assert_eq!(agent(&quota("heavy_computation_agent")).memory_high, None);
    }

    #[test]
    fn bursts_above_hard_set_ceilings_and_priority_sets_the_weight() {
        let mut q = quota("standard_agent");
        q.priority = Priority::new(9).unwrap();
        q.limits.insert(Resource::Memory, Limit { burst: 800, ..Limit::new(100, 500, Action::Suspend) });
        q.limits.insert(Resource::Processes, Limit { burst: 150, ..Limit::new(50, 100, Action::Terminate) });
        let b = agent(&q);
        assert_eq!(b, AgentBackstops { cpu_weight: 400, memory_max: Some(800), memory_high: None, pids_max: Some(150) });
        q.limits.insert(Resource::Processes, Limit::new(50, 100, Action::Terminate));
        assert_eq!(agent(&q).pids_max, Some(100), "no burst: pids.max at hard");
        q.limits.clear();
        assert_eq!(agent(&q), AgentBackstops { cpu_weight: 400, ..Default::default() });
    }

    #[test]
    fn pids_max_backs_threads_when_limited_else_processes_as_a_task_ceiling() {
        let mut q = quota("standard_agent");
        assert_eq!(agent(&q).pids_max, Some(100), "processes only: their limit as a ceiling on tasks");
        q.limits.insert(Resource::Threads, Limit { burst: 600, ..Limit::new(300, 400, Action::Warn) });
        assert_eq!(agent(&q).pids_max, Some(600), "threads limited: pids.max counts tasks, so it is theirs");
        q.limits.remove(&Resource::Processes);
        assert_eq!(agent(&q).pids_max, Some(600));
        let mut g = builtin_groups().into_iter().find(|g| g.name == "standard_agent").unwrap();
        assert_eq!(group(&g, 1).get(&Resource::Processes), Some(&2000), "no threads total: processes");
        g.totals.insert(Resource::Threads, 8000);
        let t = group(&g, 1);
        assert_eq!((t.get(&Resource::Threads), t.get(&Resource::Processes)), (Some(&8000), None), "one pids.max: threads");
    }

    #[test]
    fn group_totals_keep_only_the_kernel_resources() {
        let mut g = builtin_groups().into_iter().find(|g| g.name == "standard_agent").unwrap();
        g.totals.insert(Resource::Files, 10_000);
        g.totals.insert(Resource::Custom("tokens".into()), 5);
        let t = group(&g, 2);
        assert_eq!(t.keys().cloned().collect::<Vec<_>>(), [Resource::Memory, Resource::Cpu, Resource::Processes]);
        assert_eq!(t[&Resource::Memory], 4_000_000_000);
        g.scaling_policy = ScalingPolicy::Proportional;
        let t = group(&g, 2);
        assert_eq!((t[&Resource::Memory], t[&Resource::Cpu], t[&Resource::Processes]), (1_000_000_000, 600, 200));
    }
}
