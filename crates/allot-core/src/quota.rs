//! Agents' identity, priority and quota: group defaults merged with overrides.

use crate::group::{CustomHandler, QuotaGroup};
use crate::limits::{Action, Limit, LimitError, LimitOverride};
use crate::resource::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// An agent's id: 1..128 characters of `[A-Za-z0-9._:-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

/// An id that breaks the rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid agent id {0:?}: use 1..128 characters from [A-Za-z0-9._:-], not \".\" or \"..\" nor the name of a cgroup file (tasks, notify_on_release, release_agent, cgroup.*, memory.*, cpu.*, pids.*, ...)"
)]
pub struct AgentIdError(pub String);

impl AgentId {
    /// Validate and wrap an id.
    pub fn new(id: impl Into<String>) -> Result<Self, AgentIdError> {
        let id = id.into();
        // One directory and one file name each: `.` and `..` would name the group or allot's own cgroup.
        let ok = !id.is_empty()
            && id.len() <= 128
            && id != "."
            && id != ".."
            && !is_cgroup_file_name(&id)
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if ok { Ok(AgentId(id)) } else { Err(AgentIdError(id)) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` is (or may be) the name of a file the kernel puts in every
/// cgroup directory (cgroup v1 `tasks`, `<controller>.<file>`, `cgroup.*`): a
/// directory of that name cannot be made beside them.
pub fn is_cgroup_file_name(name: &str) -> bool {
    const FILES: [&str; 3] = ["tasks", "notify_on_release", "release_agent"];
    const PREFIXES: [&str; 17] = [
        "cgroup",
        "memory",
        "cpu",
        "cpuacct",
        "cpuset",
        "pids",
        "freezer",
        "blkio",
        "io",
        "hugetlb",
        "rdma",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "devices",
        "memsw",
    ];
    FILES.contains(&name) || name.split_once('.').is_some_and(|(p, _)| PREFIXES.contains(&p))
}

impl TryFrom<String> for AgentId {
    type Error = AgentIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AgentId::new(s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> String {
        id.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Priority 1..10; higher is more important. Default 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

/// A priority outside 1..10.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {0}: use 1..10 (higher is more important)")]
pub struct PriorityError(pub i64);

impl Priority {
    /// The default priority.
    pub const DEFAULT: Priority = Priority(5);

    /// Validate a priority.
    pub fn new(p: i64) -> Result<Self, PriorityError> {
        if (1..=10).contains(&p) { Ok(Priority(p as u8)) } else { Err(PriorityError(p)) }
    }

    /// The priority as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The cgroup cpu weight for this priority (v2 scale 1..10000, default 100
    /// at priority 5): doubling every two steps.
    pub fn cpu_weight(self) -> u64 {
        let w = 100.0 * 2f64.powf((f64::from(self.0) - 5.0) / 2.0);
        w.round() as u64
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = PriorityError;
    fn try_from(p: u8) -> Result<Self, Self::Error> {
        Priority::new(i64::from(p))
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

/// What registering an agent asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// The agent's id.
    pub id: AgentId,
    /// The quota group's name.
    pub group: String,
    /// The agent's priority.
    pub priority: Priority,
    /// Per-resource changes to the group's defaults.
    pub overrides: BTreeMap<Resource, LimitOverride>,
    /// The handler for `custom` actions, overriding the group's.
    pub custom_handler: Option<CustomHandler>,
    /// The named budget pools it draws on (each a valid group name), in order.
    #[serde(default)]
    pub pools: Vec<String>,
}

impl AgentSpec {
    /// A spec with the group's defaults and default priority, drawing on no pool.
    pub fn new(id: AgentId, group: impl Into<String>) -> Self {
        AgentSpec {
            id,
            group: group.into(),
            priority: Priority::DEFAULT,
            overrides: BTreeMap::new(),
            custom_handler: None,
            pools: Vec::new(),
        }
    }
}

/// The limits in force for one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The agent.
    pub agent: AgentId,
    /// Its group.
    pub group: String,
    /// Its priority.
    pub priority: Priority,
    /// The merged limits.
    pub limits: BTreeMap<Resource, Limit>,
    /// The handler for `custom` actions, if any.
    pub custom_handler: Option<CustomHandler>,
}

/// Merge `spec`'s overrides over `group`'s defaults; `field` names the agent's
/// location for errors (for example `agents[2]`).
pub fn resolve(group: &QuotaGroup, spec: &AgentSpec, field: &str) -> Result<Quota, LimitError> {
    let mut limits = group.limits.clone();
    for (resource, o) in &spec.overrides {
        let f = format!("{field}.limits.{resource}");
        let merged = o.apply(group.limits.get(resource), &f)?;
        limits.insert(resource.clone(), merged);
    }
    let custom_handler = spec.custom_handler.clone().or_else(|| group.custom_handler.clone());
    if custom_handler.is_none() {
        if let Some((r, _)) = limits.iter().find(|(_, l)| l.action == Action::Custom) {
            return Err(LimitError {
                field: format!("{field}.limits.{r}.action"),
                problem: "action is custom but no custom_handler is configured for the group or agent".into(),
            });
        }
    }
    Ok(Quota { agent: spec.id.clone(), group: group.name.clone(), priority: spec.priority, limits, custom_handler })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::builtin_groups;

    #[test]
    fn agent_ids_follow_the_spec() {
        assert!(AgentId::new("worker-1.a:b_c").is_ok());
        assert!(AgentId::new("x".repeat(128)).is_ok());
        for bad in ["", "has space", "slash/no", "ü", &"x".repeat(129)] {
            assert!(AgentId::new(bad).unwrap_err().to_string().contains("[A-Za-z0-9._:-]"), "{bad}");
        }
    }

    #[test]
    fn priorities_are_one_to_ten_and_map_to_weights() {
        assert!(Priority::new(0).is_err() && Priority::new(11).is_err());
        assert_eq!(Priority::new(5).unwrap().cpu_weight(), 100);
        assert_eq!(Priority::new(7).unwrap().cpu_weight(), 200);
        assert_eq!(Priority::new(1).unwrap().cpu_weight(), 25);
        assert_eq!(Priority::new(10).unwrap().cpu_weight(), 566);
        let weights: Vec<_> = (1..=10).map(|p| Priority::new(p).unwrap().cpu_weight()).collect();
        assert!(weights.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn overrides_merge_over_group_defaults() {
        let group = &builtin_groups()[1];
        let mut spec = AgentSpec::new(AgentId::new("a").unwrap(), "standard_agent");
        spec.overrides.insert(Resource::Memory, LimitOverride { hard: Some(300_000_000), ..Default::default() });
        spec.overrides.insert(Resource::Files, LimitOverride { soft: Some(500), hard: Some(1000), ..Default::default() });
        let q = resolve(group, &spec, "agents[0]").unwrap();
        assert_eq!(q.limits[&Resource::Memory].hard, 300_000_000);
        assert_eq!(q.limits[&Resource::Memory].soft, 200_000_000);
        assert_eq!(q.limits[&Resource::Cpu], group.limits[&Resource::Cpu]);
        assert_eq!(q.limits[&Resource::Files].soft, 500);
        spec.overrides.insert(Resource::Cpu, LimitOverride { action: Some(Action::Custom), ..Default::default() });
        assert_eq!(resolve(group, &spec, "agents[0]").unwrap_err().field, "agents[0].limits.cpu.action");
    }
}
