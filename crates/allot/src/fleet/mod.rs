//! The fleet file: TOML wire format for groups and agents, validated into
//! core types with every error reported at its location.
//!
//! ```toml
//! [groups.gpu_worker]                 # a new group, or changes to a built-in one
//! extends = "heavy_computation_agent" # optional base for a new group
//! description = "GPU workers"
//! scaling_policy = "proportional"     # fixed (default) | proportional
//! limits.memory = { soft = "3Gi", hard = "4Gi", action = "suspend" }
//! totals = { memory = "16Gi", cpu = 8, tokens = "5M/day" } # custom: a budget of the group
//!
//! [pools.openai]                      # a budget pool agents draw on
//! usd_micros = { hard = "50M", calendar = "month", day = 1, at = "00:00", tz = "UTC" }
//!
//! [[agents]]
//! name = "indexer-1"
//! group = "standard_agent"
//! command = ["python3", "indexer.py"]
//! priority = 7
//! limits.memory = { soft = "200Mi", hard = "300Mi", action = "throttle" }
//! env = { LOG = "info" }
//! workdir = "/srv/indexer"
//! pools = ["openai"]
//! ```
//!
//! Submodules: `context` (errors with line, column and field; typed readers
//! of spanned TOML values), `limits` (limit tables and custom handlers),
//! `settings` (`[policy]`), `retention` (`[retention]`), `groups`
//! (`[groups.NAME]`), `budgets` (budget values, `[pools.NAME]`, an agent's
//! `pools`), `agents` (`[[agents]]`).

mod agents;
mod budgets;
mod context;
mod groups;
mod limits;
mod retention;
mod settings;

pub use agents::{AgentDef, NOBODY, Restart, default_user, resolve_user};
pub use retention::RetentionSettings;
pub use settings::Settings;

use allot_core::budget::BudgetSpec;
use allot_core::group::QuotaGroup;
use allot_core::{Ledger, Resource};
use context::Ctx;
use std::collections::BTreeMap;
use std::fmt;
use toml::de::DeTable;

/// A parsed and validated fleet.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// Groups defined or changed by the file.
    pub groups: Vec<QuotaGroup>,
    /// The agents, in file order.
    pub agents: Vec<AgentDef>,
    /// Budget pools by name (`[pools.NAME]`): each its budgets by (custom) resource.
    pub pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>,
    /// The ledger with every group and agent registered: proof that the whole fleet resolves.
    pub ledger: Ledger,
    /// Governor settings.
    pub settings: Settings,
    /// What the state database keeps, and how long the governor remembers exited agents.
    pub retention: RetentionSettings,
}

/// One problem in a fleet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, such as `agents[1].limits.memory.hard`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
        }
    }
}

/// Parse and validate a fleet file; on failure, every error found, in file order.
pub fn parse(text: &str) -> Result<Fleet, Vec<FleetError>> {
    let mut cx = Ctx::new(text);
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            cx.err(e.span().unwrap_or(0..0), "", format!("invalid TOML: {}", e.message()));
            return Err(cx.errors);
        }
    };
    let root = root.get_ref();
    cx.only(root, "", &["groups", "pools", "agents", "policy", "retention"]);
    let settings = root.get("policy").map(|p| settings::parse_settings(&mut cx, p)).unwrap_or_default();
    let retention = root.get("retention").map(|r| retention::parse_retention(&mut cx, r)).unwrap_or_default();
    let mut ledger = Ledger::with_builtin_groups();
    let groups = root.get("groups").map(|g| groups::parse_groups(&mut cx, g, &mut ledger)).unwrap_or_default();
    let pools = root.get("pools").map(|p| budgets::parse_pools(&mut cx, p)).unwrap_or_default();
    let agents = root.get("agents").map(|a| agents::parse_agents(&mut cx, a, &mut ledger, &pools)).unwrap_or_default();
    if cx.errors.is_empty() {
        Ok(Fleet { groups, agents, pools, ledger, settings, retention })
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(cx.errors)
    }
}
