//! The stored shapes of an agent's spec and quota, separate from the core
//! types: a change to how `allot-core` serializes its types does not change
//! the database, and the database is read back with errors that name the
//! field that is wrong (`limits.memory.action: unknown action "x"`).
//!
//! The JSON shape is the one earlier versions wrote (a serialized core
//! `Quota` inside `{"command", "priority", "quota", "adopted"}`), so their
//! state files still load.

mod budget;

pub use budget::{StoredBudget, StoredBudgetHold, StoredReservation, StoredSpend, StoredWindow};

use allot_core::group::{CustomHandler, QuotaGroup, ScalingPolicy, valid_group_name};
use allot_core::limits::{Action, Limit, LimitOverride};
use allot_core::quantity::Window;
use allot_core::{AgentId, Priority, Quota, Resource};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A stored value that does not convert to its core type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DtoError {
    /// The field, such as `limits.memory.action`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl DtoError {
    fn new(field: impl Into<String>, problem: impl ToString) -> Self {
        DtoError { field: field.into(), problem: problem.to_string() }
    }
}

/// The limit on one resource, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLimit {
    /// Soft limit, in the resource's internal unit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
    /// Burst limit.
    pub burst: u64,
    /// How long usage may stay between hard and burst, in milliseconds.
    #[serde(rename = "burst_window")]
    pub burst_window_ms: u64,
    /// The action's name (`warn`, `throttle`, ..., `custom`).
    pub action: String,
    /// For custom resources: the window counts are per (`second`, `minute`, `hour`, `day`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// The names of the windows, as stored.
const WINDOWS: [(Window, &str); 4] = [(Window::Second, "second"), (Window::Minute, "minute"), (Window::Hour, "hour"), (Window::Day, "day")];

fn window_name(w: Window) -> &'static str {
    WINDOWS.iter().find(|(x, _)| *x == w).map_or("minute", |(_, name)| name)
}

fn window_from_name(name: &str, field: &str) -> Result<Window, DtoError> {
    WINDOWS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(w, _)| *w)
        .ok_or_else(|| DtoError::new(field, format!("unknown window {name:?}: expected one of second, minute, hour, day")))
}

impl StoredLimit {
    /// The stored form of a core limit.
    pub fn from_core(l: &Limit) -> StoredLimit {
        StoredLimit {
            soft: l.soft,
            hard: l.hard,
            burst: l.burst,
            burst_window_ms: allot_core::time::duration_millis(l.burst_window),
            action: l.action.name().to_owned(),
            window: l.window.map(|w| window_name(w).to_owned()),
        }
    }

    /// The core limit, validated; `field` names the limit (`limits.memory`).
    pub fn to_core(&self, field: &str) -> Result<Limit, DtoError> {
        let action: Action = self.action.parse().map_err(|e| DtoError::new(format!("{field}.action"), e))?;
        let window = self.window.as_deref().map(|w| window_from_name(w, &format!("{field}.window"))).transpose()?;
        let limit = Limit {
            soft: self.soft,
            hard: self.hard,
            burst: self.burst,
            burst_window: Duration::from_millis(self.burst_window_ms),
            action,
            window,
        };
        limit.validate(field).map_err(|e| DtoError { field: e.field, problem: e.problem })?;
        Ok(limit)
    }
}

/// Where a `custom` action sends the violation, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredHandler {
    /// Run this command with the violation as JSON on stdin.
    Command(Vec<String>),
    /// POST the violation as JSON to this URL.
    Url(String),
}

impl StoredHandler {
    /// The stored form of a core handler.
    pub fn from_core(h: &CustomHandler) -> StoredHandler {
        match h {
            CustomHandler::Command(argv) => StoredHandler::Command(argv.clone()),
            CustomHandler::Url(url) => StoredHandler::Url(url.clone()),
        }
    }

    /// The core handler.
    pub fn to_core(&self) -> CustomHandler {
        match self {
            StoredHandler::Command(argv) => CustomHandler::Command(argv.clone()),
            StoredHandler::Url(url) => CustomHandler::Url(url.clone()),
        }
    }
}

/// An agent's quota as in force, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredQuota {
    /// The agent's id, as written by earlier versions; [`StoredQuota::to_core`]
    /// takes the id from the agent's row instead.
    #[serde(default)]
    pub agent: String,
    /// The group's name.
    pub group: String,
    /// The priority, 1..10.
    pub priority: u8,
    /// The merged limits by resource name.
    pub limits: BTreeMap<String, StoredLimit>,
    /// The handler for `custom` actions, if any.
    #[serde(default)]
    pub custom_handler: Option<StoredHandler>,
}

impl Default for StoredQuota {
    /// No group and no limits, at the default priority: what is stored for an
    /// agent whose quota is unknown.
    fn default() -> Self {
        StoredQuota {
            agent: String::new(),
            group: String::new(),
            priority: Priority::DEFAULT.get(),
            limits: BTreeMap::new(),
            custom_handler: None,
        }
    }
}

fn resource(name: &str) -> Result<Resource, DtoError> {
    name.parse().map_err(|e| DtoError::new(format!("limits.{name}"), e))
}

impl StoredQuota {
    /// The stored form of a core quota.
    pub fn from_core(q: &Quota) -> StoredQuota {
        StoredQuota {
            agent: q.agent.to_string(),
            group: q.group.clone(),
            priority: q.priority.get(),
            limits: q.limits.iter().map(|(r, l)| (r.name().to_owned(), StoredLimit::from_core(l))).collect(),
            custom_handler: q.custom_handler.as_ref().map(StoredHandler::from_core),
        }
    }

    /// The core quota of `agent`, every field checked.
    pub fn to_core(&self, agent: &AgentId) -> Result<Quota, DtoError> {
        if !valid_group_name(&self.group) {
            return Err(DtoError::new("group", format!("invalid group name {:?}: use 1..64 characters from [a-z0-9_]", self.group)));
        }
        let priority = Priority::new(i64::from(self.priority)).map_err(|e| DtoError::new("priority", e))?;
        let mut limits = BTreeMap::new();
        for (name, l) in &self.limits {
            limits.insert(resource(name)?, l.to_core(&format!("limits.{name}"))?);
        }
        let custom_handler = self.custom_handler.as_ref().map(StoredHandler::to_core);
        Ok(Quota { agent: agent.clone(), group: self.group.clone(), priority, limits, custom_handler })
    }

    /// Every field of every limit as an override, so that registering the
    /// agent again reproduces exactly the stored limits whatever its group's
    /// defaults are now.
    pub fn overrides(&self) -> Result<BTreeMap<Resource, LimitOverride>, DtoError> {
        let mut out = BTreeMap::new();
        for (name, l) in &self.limits {
            let l = l.to_core(&format!("limits.{name}"))?;
            let o = LimitOverride {
                soft: Some(l.soft),
                hard: Some(l.hard),
                burst: Some(l.burst),
                burst_window: Some(l.burst_window),
                action: Some(l.action),
                window: l.window,
            };
            out.insert(resource(name)?, o);
        }
        Ok(out)
    }
}

/// A per-agent change to one resource's limit, as stored: only the fields
/// the agent's start and run-time changes gave (`None` keeps the group's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOverride {
    /// Soft limit, in the resource's internal unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<u64>,
    /// Hard limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<u64>,
    /// Burst limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Burst window, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "burst_window")]
    pub burst_window_ms: Option<u64>,
    /// The action's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For custom resources: the window counts are per.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl StoredOverride {
    /// The stored form of a core override.
    pub fn from_core(o: &LimitOverride) -> StoredOverride {
        StoredOverride {
            soft: o.soft,
            hard: o.hard,
            burst: o.burst,
            burst_window_ms: o.burst_window.map(allot_core::time::duration_millis),
            action: o.action.map(|a| a.name().to_owned()),
            window: o.window.map(|w| window_name(w).to_owned()),
        }
    }

    /// The core override; `field` names it (`overrides.memory`).
    pub fn to_core(&self, field: &str) -> Result<LimitOverride, DtoError> {
        let action =
            self.action.as_deref().map(|a| a.parse::<Action>().map_err(|e| DtoError::new(format!("{field}.action"), e))).transpose()?;
        let window = self.window.as_deref().map(|w| window_from_name(w, &format!("{field}.window"))).transpose()?;
        Ok(LimitOverride {
            soft: self.soft,
            hard: self.hard,
            burst: self.burst,
            burst_window: self.burst_window_ms.map(Duration::from_millis),
            action,
            window,
        })
    }
}

/// Overrides by resource name, stored.
pub fn overrides_from_core(o: &BTreeMap<Resource, LimitOverride>) -> BTreeMap<String, StoredOverride> {
    o.iter().map(|(r, o)| (r.name().to_owned(), StoredOverride::from_core(o))).collect()
}

/// Stored overrides as core ones, every field checked.
pub fn overrides_to_core(o: &BTreeMap<String, StoredOverride>) -> Result<BTreeMap<Resource, LimitOverride>, DtoError> {
    o.iter()
        .map(|(name, o)| {
            let r: Resource = name.parse().map_err(|e| DtoError::new(format!("overrides.{name}"), e))?;
            Ok((r, o.to_core(&format!("overrides.{name}"))?))
        })
        .collect()
}

/// A quota group as stored (created or changed through the daemon's API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    /// The group's name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Default limits for each member, by resource name.
    #[serde(default)]
    pub limits: BTreeMap<String, StoredLimit>,
    /// Totals over all members' usage, by resource name, in internal units.
    #[serde(default)]
    pub totals: BTreeMap<String, u64>,
    /// Budgets shared by the members, on custom resources, by resource name
    /// (absent in rows of earlier versions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, StoredBudget>,
    /// `fixed` or `proportional`.
    #[serde(default = "fixed")]
    pub scaling_policy: String,
    /// The handler for `custom` actions of members that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_handler: Option<StoredHandler>,
}

fn fixed() -> String {
    "fixed".to_owned()
}

impl StoredGroup {
    /// The stored form of a core group.
    pub fn from_core(g: &QuotaGroup) -> StoredGroup {
        StoredGroup {
            name: g.name.clone(),
            description: g.description.clone(),
            limits: g.limits.iter().map(|(r, l)| (r.name().to_owned(), StoredLimit::from_core(l))).collect(),
            totals: g.totals.iter().map(|(r, v)| (r.name().to_owned(), *v)).collect(),
            budgets: g.budgets.iter().map(|(r, b)| (r.name().to_owned(), StoredBudget::from_core(b))).collect(),
            scaling_policy: match g.scaling_policy {
                ScalingPolicy::Fixed => "fixed",
                ScalingPolicy::Proportional => "proportional",
            }
            .to_owned(),
            custom_handler: g.custom_handler.as_ref().map(StoredHandler::from_core),
        }
    }

    /// The core group, every field checked (and the group validated).
    pub fn to_core(&self) -> Result<QuotaGroup, DtoError> {
        if !valid_group_name(&self.name) {
            return Err(DtoError::new("name", format!("invalid group name {:?}: use 1..64 characters from [a-z0-9_]", self.name)));
        }
        let mut limits = BTreeMap::new();
        for (name, l) in &self.limits {
            limits.insert(resource(name)?, l.to_core(&format!("limits.{name}"))?);
        }
        let mut totals = BTreeMap::new();
        let mut budgets = BTreeMap::new();
        for (name, b) in &self.budgets {
            let f = format!("budgets.{name}");
            let r: Resource = name.parse().map_err(|e| DtoError::new(&f, e))?;
            if !r.is_custom() {
                return Err(DtoError::new(f, format!("{r} is not a custom resource: budgets are on custom resources only")));
            }
            budgets.insert(r, b.to_core().map_err(|e| DtoError::new(format!("{f}.{}", e.field), e.problem))?);
        }
        for (name, v) in &self.totals {
            let r: Resource = name.parse().map_err(|e| DtoError::new(format!("totals.{name}"), e))?;
            // Rows of earlier versions kept a total on a custom resource
            // without its window: it is the group's budget per minute, as a bare count reads.
            if r.is_custom() {
                if *v == 0 {
                    return Err(DtoError::new(format!("totals.{name}"), "a budget must be greater than 0"));
                }
                budgets.entry(r).or_insert_with(|| allot_core::budget::BudgetSpec::rolling(*v, Window::Minute));
            } else {
                totals.insert(r, *v);
            }
        }
        let scaling_policy = match self.scaling_policy.as_str() {
            "fixed" => ScalingPolicy::Fixed,
            "proportional" => ScalingPolicy::Proportional,
            other => {
                return Err(DtoError::new("scaling_policy", format!("unknown scaling policy {other:?}: expected fixed or proportional")));
            }
        };
        let g = QuotaGroup {
            name: self.name.clone(),
            description: self.description.clone(),
            limits,
            totals,
            budgets,
            scaling_policy,
            custom_handler: self.custom_handler.as_ref().map(StoredHandler::to_core),
        };
        g.validate("group").map_err(|e| DtoError::new(self.name.clone(), e))?;
        Ok(g)
    }
}

/// An agent's definition as stored in its row's `spec` column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpec {
    /// The command it was started with (empty when adopted).
    #[serde(default)]
    pub command: Vec<String>,
    /// Its priority, 1..10.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Its quota as in force (earlier versions wrote `null` when unknown).
    #[serde(default, deserialize_with = "null_as_default")]
    pub quota: StoredQuota,
    /// Whether it was adopted (a running process taken over) rather than started.
    #[serde(default)]
    pub adopted: bool,
    /// Who holds it frozen or throttled, so that a restarted governor keeps the holds it can stand behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<StoredHold>,
    /// The user and group it runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<(u32, u32)>,
    /// A termination in its grace period: why, and when the kill is due
    /// (ms since the epoch), so that a restarted governor carries it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<StoredTermination>,
    /// Its own overrides (of its start and run-time changes), field by field;
    /// `None` in rows of earlier versions, which pinned the whole quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BTreeMap<String, StoredOverride>>,
    /// The budget pools it draws on (none in rows of earlier versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// Whether it may be moved to another node (cluster mode's migrate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restartable: bool,
}

/// A termination in its grace period, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTermination {
    /// Why it is terminated.
    pub reason: String,
    /// When the kill is due, in ms since the Unix epoch.
    pub kill_at_ms: u64,
}

/// One holder's hold on an agent, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHold {
    /// The holder's wire name (`operator`, `host_pressure`, `policy:memory`).
    pub holder: String,
    /// Whether it holds a freeze.
    #[serde(default)]
    pub freeze: bool,
    /// The cpu limit of its throttle, in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
    /// The memory.high of its throttle, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<u64>,
    /// Whether it holds a throttle at all.
    #[serde(default)]
    pub throttle: bool,
}

impl Default for StoredSpec {
    /// No command, the default priority, an unknown quota, not adopted, no holds.
    fn default() -> Self {
        StoredSpec {
            command: Vec::new(),
            priority: default_priority(),
            quota: StoredQuota::default(),
            adopted: false,
            holds: Vec::new(),
            user: None,
            terminating: None,
            overrides: None,
            pools: Vec::new(),
            restartable: false,
        }
    }
}

fn default_priority() -> u8 {
    Priority::DEFAULT.get()
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
