//! Quota groups: the three built-in groups of SPEC section 5 and custom ones;
//! a group's totals on custom resources are its budgets (see [`crate::budget`]).

use crate::budget::BudgetSpec;
use crate::limits::{Action, Limit, LimitError};
use crate::resource::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a group's totals relate to its members (SPEC section 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingPolicy {
    /// The totals as configured.
    #[default]
    Fixed,
    /// members x per-agent hard limit, capped by the configured total.
    Proportional,
}

/// Where a `custom` action sends the violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomHandler {
    /// Run this command with the violation as JSON on stdin.
    Command(Vec<String>),
    /// POST the violation as JSON to this URL.
    Url(String),
}

/// A named set of default limits and group totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaGroup {
    /// The group's name (`[a-z0-9_]`, 1..64 characters).
    pub name: String,
    /// What the group is for.
    pub description: String,
    /// Default limits for each member.
    pub limits: BTreeMap<Resource, Limit>,
    /// Totals over all members' usage, on kernel resources (memory, cpu, ...).
    pub totals: BTreeMap<Resource, u64>,
    /// Budgets shared by the members, on custom resources (`tokens`,
    /// `usd_micros`): a group's totals on those, each with its window.
    #[serde(default, with = "crate::budget::text::serde_budgets")]
    pub budgets: BTreeMap<Resource, BudgetSpec>,
    /// How the totals scale with membership.
    pub scaling_policy: ScalingPolicy,
    /// The handler for `custom` actions of members that set none.
    pub custom_handler: Option<CustomHandler>,
}

/// Names of the built-in groups.
pub const BUILTIN_GROUPS: [&str; 3] = ["lightweight_agent", "standard_agent", "heavy_computation_agent"];

/// A group definition that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The name is not valid.
    #[error(
        "{field}: invalid group name {name:?}: use 1..64 characters from [a-z0-9_], not a cgroup file name (tasks, notify_on_release, release_agent)"
    )]
    Name {
        /// Where the name came from.
        field: String,
        /// The name given.
        name: String,
    },
    /// A limit is invalid.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A custom action without a handler.
    #[error("{field}: action is custom but no custom_handler is configured for the group or agent")]
    MissingHandler {
        /// The limit's location.
        field: String,
    },
}

/// Check that `name` is a valid group name.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !crate::quota::is_cgroup_file_name(name)
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl QuotaGroup {
    /// Check the name and every limit; `field` names the group's location.
    pub fn validate(&self, field: &str) -> Result<(), GroupError> {
        if !valid_group_name(&self.name) {
            return Err(GroupError::Name { field: format!("{field}.name"), name: self.name.clone() });
        }
        for (resource, limit) in &self.limits {
            let f = format!("{field}.limits.{resource}");
            limit.validate(&f)?;
            if limit.action == Action::Custom && self.custom_handler.is_none() {
                return Err(GroupError::MissingHandler { field: f });
            }
        }
        Ok(())
    }

    /// The group totals in force for `members` members.
    pub fn effective_totals(&self, members: usize) -> BTreeMap<Resource, u64> {
        match self.scaling_policy {
            ScalingPolicy::Fixed => self.totals.clone(),
            ScalingPolicy::Proportional => self
                .totals
                .iter()
                .map(|(r, total)| {
                    let per_agent = self.limits.get(r).map_or(*total, |l| l.hard);
                    let scaled = per_agent.saturating_mul(members as u64);
                    (r.clone(), scaled.min(*total))
                })
                .collect(),
        }
    }
}

fn group(name: &str, description: &str, limits: [(Resource, Limit); 3], totals: [(Resource, u64); 3]) -> QuotaGroup {
    QuotaGroup {
        name: name.to_owned(),
        description: description.to_owned(),
        limits: limits.into_iter().collect(),
        totals: totals.into_iter().collect(),
        budgets: BTreeMap::new(),
        scaling_policy: ScalingPolicy::Fixed,
        custom_handler: None,
    }
}

/// The three built-in groups, with the sketch's numbers (cpu in millicores:
/// the sketch's percent of one core times 10; MB are decimal).
pub fn builtin_groups() -> Vec<QuotaGroup> {
    use Action::*;
    use Resource::*;
    const MB: u64 = 1_000_000;
    const GB: u64 = 1_000_000_000;
    vec![
        group(
            "lightweight_agent",
            "Lightweight agents with minimal resource requirements",
            [(Memory, Limit::new(50 * MB, 100 * MB, Warn)), (Cpu, Limit::new(50, 100, Throttle)), (Processes, Limit::new(10, 20, Suspend))],
            [(Memory, GB), (Cpu, 2000), (Processes, 500)],
        ),
        group(
            "standard_agent",
            "Standard agents with moderate resource requirements",
            [
                (Memory, Limit::new(200 * MB, 500 * MB, Throttle)),
                (Cpu, Limit::new(150, 300, Throttle)),
                (Processes, Limit::new(50, 100, ScaleDown)),
            ],
            [(Memory, 4 * GB), (Cpu, 6000), (Processes, 2000)],
        ),
        group(
            "heavy_computation_agent",
            "Agents requiring significant computational resources",
            [
                (Memory, Limit::new(GB, 2 * GB, Suspend)),
                (Cpu, Limit::new(400, 800, ScaleDown)),
                (Processes, Limit::new(100, 200, Terminate)),
            ],
            [(Memory, 8 * GB), (Cpu, 16000), (Processes, 1000)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_groups_match_the_sketch_exactly() {
        let groups = builtin_groups();
        let names: Vec<_> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, BUILTIN_GROUPS);
        let row = |g: &QuotaGroup, r: Resource| {
            let l = &g.limits[&r];
            (l.soft, l.hard, l.burst, l.action)
        };
        let [light, standard, heavy] = &groups[..] else { panic!() };
        assert_eq!(row(light, Resource::Memory), (50_000_000, 100_000_000, 100_000_000, Action::Warn));
        assert_eq!(row(light, Resource::Cpu), (50, 100, 100, Action::Throttle));
        assert_eq!(row(light, Resource::Processes), (10, 20, 20, Action::Suspend));
        assert_eq!(row(standard, Resource::Memory), (200_000_000, 500_000_000, 500_000_000, Action::Throttle));
        assert_eq!(row(standard, Resource::Cpu), (150, 300, 300, Action::Throttle));
        assert_eq!(row(standard, Resource::Processes), (50, 100, 100, Action::ScaleDown));
        assert_eq!(row(heavy, Resource::Memory), (1_000_000_000, 2_000_000_000, 2_000_000_000, Action::Suspend));
        assert_eq!(row(heavy, Resource::Cpu), (400, 800, 800, Action::ScaleDown));
        assert_eq!(row(heavy, Resource::Processes), (100, 200, 200, Action::Terminate));
        assert_eq!(light.totals[&Resource::Memory], 1_000_000_000);
        assert_eq!(standard.totals[&Resource::Cpu], 6000);
        assert_eq!(heavy.totals[&Resource::Processes], 1000);
        for g in &groups {
            g.validate("groups").unwrap();
            assert_eq!(g.limits.values().map(|l| l.burst_window.as_secs()).collect::<Vec<_>>(), [30, 30, 30]);
        }
    }

    #[test]
    fn proportional_totals_scale_with_members_and_are_capped() {
        let mut g = builtin_groups().remove(0);
        g.scaling_policy = ScalingPolicy::Proportional;
        assert_eq!(g.effective_totals(3)[&Resource::Memory], 300_000_000);
        assert_eq!(g.effective_totals(1000)[&Resource::Memory], 1_000_000_000);
        assert_eq!(g.effective_totals(0)[&Resource::Cpu], 0);
    }

    #[test]
    fn validation_names_the_field() {
        let mut g = builtin_groups().remove(1);
        g.name = "Bad-Name".into();
        assert!(g.validate("groups.Bad-Name").unwrap_err().to_string().starts_with("groups.Bad-Name.name: invalid group name"));
        let mut g = builtin_groups().remove(1);
        g.limits.get_mut(&Resource::Cpu).unwrap().action = Action::Custom;
        assert_eq!(
            g.validate("groups.standard_agent").unwrap_err().to_string(),
            "groups.standard_agent.limits.cpu: action is custom but no custom_handler is configured for the group or agent"
        );
    }
}
