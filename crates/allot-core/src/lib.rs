//! allot-core: the pure domain of allot.
//!
//! Quantities and units, resources, limits, quota groups and quotas, the
//! ledger of agents and usage, the enforcement policy, degradation and
//! recovery planning, alerts and events; the holders of freezes and
//! throttles, host-pressure victim choice, kernel backstop values and
//! counter rates; budgets on custom resources (reserve, then settle).
//!
//! **Architecture invariant:** nothing here does I/O, reads a clock, spawns a
//! thread or depends on an async runtime. Time comes in as [`time::Time`], so
//! every decision can be replayed from the recorded observations.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod analytics;
pub mod analytics_corpus;
pub mod backstops;
pub mod budget;
pub mod compliance;
pub mod degradation;
pub mod events;
pub mod grants;
pub mod group;
pub mod holds;
pub mod host;
pub mod ledger;
pub mod limits;
pub mod policy;
pub mod pressure;
pub mod quantity;
pub mod quota;
pub mod rate;
pub mod resource;
pub mod time;
pub mod working_set;

pub use group::QuotaGroup;
pub use ledger::{Assessment, Ledger, Violation, ViolationKind};
pub use limits::{Action, Limit};
pub use policy::{Decision, DecisionKind, Policy, PolicyConfig};
pub use quota::{AgentId, AgentSpec, Priority, Quota};
pub use resource::{Resource, Unit};
pub use time::Time;
