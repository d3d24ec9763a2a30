//! The budget vocabulary: levels, a budget's spec, and what each change of
//! the ledger returns (reservations, charges, settles, expiries, refusals, views).

use super::window::{Rolling, WindowSpec};
use crate::limits::Limit;
use crate::quantity::Window;
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use std::fmt;
use std::str::FromStr;

/// Where a budget sits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// One agent's own limit.
    Agent(AgentId),
    /// A group's totals, shared by its members.
    Group(String),
    /// A named pool that several agents draw on.
    Pool(String),
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Agent(a) => write!(f, "agent:{a}"),
            Level::Group(g) => write!(f, "group:{g}"),
            Level::Pool(p) => write!(f, "pool:{p}"),
        }
    }
}

/// A level's text that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid budget level {0:?}: expected agent:<id>, group:<name> or pool:<name> (names of 1..64 characters from [a-z0-9_])")]
pub struct LevelError(pub String);

impl FromStr for Level {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LevelError(s.to_owned());
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "agent" => AgentId::new(name).map(Level::Agent).map_err(|_| bad()),
            "group" if crate::group::valid_group_name(name) => Ok(Level::Group(name.to_owned())),
            "pool" if crate::group::valid_group_name(name) => Ok(Level::Pool(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// What happens to a reservation that expires unsettled, at one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// Charged in full: a crashed agent cannot hide its spend (the default).
    #[default]
    Charge,
    /// Returned, as if released.
    Release,
}

impl Expiry {
    /// The name as written in files and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Expiry::Charge => "charge",
            Expiry::Release => "release",
        }
    }
}

impl FromStr for Expiry {
    type Err = BudgetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "charge" => Ok(Expiry::Charge),
            "release" => Ok(Expiry::Release),
            _ => Err(BudgetError::Invalid(format!("unknown expiry {s:?}: expected charge or release"))),
        }
    }
}

/// The largest budget: what the state database (SQLite integers) keeps exactly.
pub const MAX_BUDGET: u64 = i64::MAX as u64;

/// One budget: limits, window, what an expiry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BudgetSpec {
    /// No reservation takes spent + reserved above this.
    pub hard: u64,
    /// Above this the budget is reported over soft (warnings); at most `hard`.
    pub soft: Option<u64>,
    /// The window the spend is counted over.
    pub window: WindowSpec,
    /// What an unsettled reservation's expiry does here.
    pub on_expiry: Expiry,
}

impl BudgetSpec {
    /// A rolling budget of `hard` per `window` (`100k/min`), expiries charged.
    pub fn rolling(hard: u64, window: Window) -> BudgetSpec {
        BudgetSpec { hard, soft: None, window: WindowSpec::Rolling(Rolling::of(window)), on_expiry: Expiry::Charge }
    }

    /// An agent's or group's limit on a custom resource as a rolling budget:
    /// its hard and soft over its window (per minute when it has none). A
    /// limit above [`MAX_BUDGET`] (no limit in practice) is that much.
    pub fn from_limit(limit: &Limit) -> BudgetSpec {
        let hard = limit.hard.min(MAX_BUDGET);
        let mut spec = BudgetSpec::rolling(hard, limit.window.unwrap_or(Window::Minute));
        spec.soft = (limit.soft < hard).then_some(limit.soft);
        spec
    }

    pub(super) fn validate(&self, level: &Level, resource: &Resource) -> Result<(), BudgetError> {
        let field = format!("{level}.{resource}");
        if !resource.is_custom() {
            return Err(BudgetError::Invalid(format!("{field}: budgets are for custom resources (tokens, usd_micros), not {resource}")));
        }
        if self.hard == 0 {
            return Err(BudgetError::Invalid(format!("{field}: hard must be greater than 0")));
        }
        if self.hard > MAX_BUDGET {
            return Err(BudgetError::Invalid(format!(
                "{field}: hard ({}) is above {MAX_BUDGET}, the most the state database keeps exactly",
                self.hard
            )));
        }
        if let Some(soft) = self.soft.filter(|s| *s > self.hard) {
            return Err(BudgetError::Invalid(format!("{field}: soft ({soft}) must not exceed hard ({})", self.hard)));
        }
        Ok(())
    }
}

/// A change to the budgets that is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A value breaks a rule; the text names the field.
    #[error("{0}")]
    Invalid(String),
}

/// A window replaced by another: the budget starts clean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowChange {
    /// The budget's level.
    pub level: Level,
    /// Its resource.
    pub resource: Resource,
    /// The window before.
    pub from: WindowSpec,
    /// The window now.
    pub to: WindowSpec,
    /// The spend counted under the old window, no longer counted.
    pub dropped: u64,
}

/// A spend written into one bucket of one budget: what a store records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The level charged.
    pub level: Level,
    /// The resource.
    pub resource: Resource,
    /// The window's identity ([`WindowSpec::key`]).
    pub window: String,
    /// The bucket: a rolling bucket's number, or a calendar period's start in ms.
    pub bucket: u64,
    /// The amount.
    pub amount: u64,
    /// The oldest bucket still counted: stored buckets before it may go.
    pub keep_from: u64,
}

/// A budget over its hard limit after a spend that had to be counted (an
/// overrun at settle, a plain usage report, a charged expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// The level.
    pub level: Level,
    /// The resource.
    pub resource: Resource,
    /// Spent plus reserved there now.
    pub used: u64,
    /// Its hard limit.
    pub hard: u64,
}

/// One resource of a reservation and the levels holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The resource.
    pub resource: Resource,
    /// The amount held at each level.
    pub amount: u64,
    /// The levels holding it, in order: agent, group, pools.
    pub levels: Vec<Level>,
}

/// An open reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Its id (unique for the life of the ledger and its store).
    pub id: u64,
    /// The agent that made it.
    pub agent: AgentId,
    /// When it was made.
    pub created: Time,
    /// When it expires unsettled.
    pub expires: Time,
    /// What it holds, by resource.
    pub holds: Vec<Hold>,
}

/// Why a reservation or usage report is refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The agent is not known to the budgets.
    #[error("unknown agent {0}: it has no budgets")]
    UnknownAgent(AgentId),
    /// No level of the agent has a budget on the resource.
    #[error("agent {agent}: no budget on {resource} at any of its levels (agent, group, pools)")]
    UnknownResource {
        /// The agent.
        agent: AgentId,
        /// The resource.
        resource: Resource,
    },
    /// A pool the agent draws on has no budget.
    #[error("agent {agent}: {level} has no budget")]
    UnknownLevel {
        /// The agent.
        agent: AgentId,
        /// The level.
        level: Level,
    },
    /// The request itself is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A level's hard limit would be exceeded.
    #[error("{level} {resource}: {requested} more would take spent ({spent}) + reserved ({reserved}) above hard ({hard})")]
    Exhausted {
        /// The level that refused (the first in order agent, group, pools).
        level: Level,
        /// Its resource.
        resource: Resource,
        /// The amount asked for.
        requested: u64,
        /// Spent in the window.
        spent: u64,
        /// Reserved and not settled.
        reserved: u64,
        /// The hard limit.
        hard: u64,
        /// When to try again: when the window frees enough, else the next
        /// expiry of a reservation held there; `None` when never (more than hard).
        retry_after: Option<Time>,
    },
}

impl Refusal {
    /// When to try again, for an exhausted budget.
    pub fn retry_after(&self) -> Option<Time> {
        match self {
            Refusal::Exhausted { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A settle, release or undo that cannot be done. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// No open reservation has this id (settled, released, expired or never made).
    #[error("no open reservation {0}")]
    UnknownReservation(u64),
    /// A resource not reserved has no budget at any of the agent's levels.
    #[error("reservation {id}: agent {agent} has no budget on {resource}")]
    UnknownResource {
        /// The reservation.
        id: u64,
        /// Its agent.
        agent: AgentId,
        /// The resource.
        resource: Resource,
    },
}

/// One resource of a settle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleLine {
    /// The resource.
    pub resource: Resource,
    /// The amount reserved (0 for a resource not reserved).
    pub reserved: u64,
    /// The amount charged.
    pub actual: u64,
    /// The unused part returned.
    pub returned: u64,
    /// How much more than reserved was charged.
    pub overrun: u64,
}

/// A settled reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The reservation as it was.
    pub reservation: Reservation,
    /// Per resource.
    pub lines: Vec<SettleLine>,
    /// The spend to record.
    pub charges: Vec<Charge>,
    /// Budgets left over their hard limit by an overrun.
    pub over_limit: Vec<OverLimit>,
}

impl Settled {
    /// Whether anything was charged beyond what was reserved.
    pub fn overran(&self) -> bool {
        self.lines.iter().any(|l| l.overrun > 0)
    }
}

/// A reservation ended by its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The reservation as it was.
    pub reservation: Reservation,
    /// What was charged (levels whose budget releases expiries charge nothing).
    pub charges: Vec<Charge>,
    /// Budgets over their hard limit after it.
    pub over_limit: Vec<OverLimit>,
}

/// A usage report counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// What was charged.
    pub charges: Vec<Charge>,
    /// Budgets over their hard limit after it.
    pub over_limit: Vec<OverLimit>,
}

/// One budget as the CLI and API show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetView {
    /// The level.
    pub level: Level,
    /// The resource.
    pub resource: Resource,
    /// Its window.
    pub window: WindowSpec,
    /// The hard limit.
    pub hard: u64,
    /// This node's slice of a cluster budget, when capped (cluster mode).
    pub cap: Option<u64>,
    /// The soft limit, if any.
    pub soft: Option<u64>,
    /// Spent in the window.
    pub spent: u64,
    /// Reserved and not settled.
    pub reserved: u64,
    /// `min(hard, cap) - spent - reserved`, 0 when over.
    pub remaining: u64,
    /// When the spend next drops: a calendar window's reset, or when the
    /// oldest counted bucket of a rolling one leaves (`None`: nothing spent).
    pub resets_at: Option<Time>,
    /// What an expiry does here.
    pub on_expiry: Expiry,
}
