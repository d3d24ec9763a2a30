//! What the policy decides: [`Decision`], [`DecisionKind`] and what a restore lifts ([`Hold`]).

use crate::degradation::DegradationEvent;
use crate::ledger::{Violation, ViolationKind};
use crate::limits::Action;
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a throttle or suspension holds, for restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// A throttle on this resource.
    Throttle,
    /// A suspension of the agent.
    Suspend,
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionKind {
    /// Log and publish: a violation started.
    Warn {
        /// The violation.
        violation: Violation,
    },
    /// An action will follow after its escalation delay unless the violation clears.
    Scheduled {
        /// The action.
        action: Action,
        /// When it is due.
        due: Time,
    },
    /// A scheduled action was cancelled because its violation cleared.
    CancelPending {
        /// The action.
        action: Action,
        /// The usage that cleared it.
        usage: u64,
    },
    /// Lower the agent's share of the resource by `factor`.
    Throttle {
        /// Factor of current use to allow (0.5..0.9).
        factor: f64,
        /// The violation.
        violation: Violation,
        /// True when this throttle only bridges the wait for a stronger action.
        interim: bool,
    },
    /// Freeze the agent's whole tree.
    Suspend {
        /// The violation.
        violation: Violation,
        /// True when an unmet scale-down request escalated to this.
        after_scale_down: bool,
    },
    /// Notice, wait `grace`, kill the tree, unregister.
    Terminate {
        /// Grace between notice and kill.
        grace: Duration,
        /// The violation.
        violation: Violation,
    },
    /// Ask the agent to bring usage under `target` by `deadline`.
    ScaleDown {
        /// Target usage.
        target: u64,
        /// Deadline.
        deadline: Time,
        /// The violation.
        violation: Violation,
    },
    /// Measured usage went under the scale-down target before the deadline.
    ScaleDownMet {
        /// The target.
        target: u64,
        /// The usage measured.
        usage: u64,
    },
    /// Restart the agent elsewhere (suspend where no node has room).
    Migrate {
        /// The violation.
        violation: Violation,
    },
    /// Run the configured custom handler.
    Custom {
        /// The violation.
        violation: Violation,
    },
    /// A violation episode ended: no violation for the recovery dwell.
    Cleared {
        /// The worst violation of the episode.
        worst: ViolationKind,
        /// The usage that ended it.
        usage: u64,
    },
    /// Lift a throttle or suspension after healthy usage for the dwell time.
    Restore {
        /// What is lifted.
        from: Hold,
    },
    /// A degradation plan, recovery stage or rollback.
    Degradation {
        /// What happened.
        event: DegradationEvent,
    },
}

impl DecisionKind {
    /// The action name used in event topics (`resource_management.enforcement.<name>`),
    /// or `None` for degradation decisions.
    pub fn action_name(&self) -> Option<&'static str> {
        Some(match self {
            DecisionKind::Warn { .. } => "warn",
            DecisionKind::Scheduled { .. } => "scheduled",
            DecisionKind::CancelPending { .. } => "cancelled",
            DecisionKind::Throttle { .. } => "throttle",
            DecisionKind::Suspend { .. } => "suspend",
            DecisionKind::Terminate { .. } => "terminate",
            DecisionKind::ScaleDown { .. } => "scale_down",
            DecisionKind::ScaleDownMet { .. } => "scale_down_met",
            DecisionKind::Migrate { .. } => "migrate",
            DecisionKind::Custom { .. } => "custom",
            DecisionKind::Restore { .. } => "restore",
            DecisionKind::Cleared { .. } => "cleared",
            DecisionKind::Degradation { .. } => return None,
        })
    }
}

/// A decision about one agent and resource, effective at `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When it takes effect (an observation's time or a timer's due time).
    pub at: Time,
    /// The agent.
    pub agent: AgentId,
    /// The resource whose limit caused it.
    pub resource: Resource,
    /// What to do.
    #[serde(flatten)]
    pub kind: DecisionKind,
}
