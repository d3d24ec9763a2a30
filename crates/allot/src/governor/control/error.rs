//! [`ControlError`]: why a command to the governor could not be carried
//! out; the API alone maps each to an HTTP status.

/// Why a command could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No agent of that id.
    #[error("no agent {0:?}")]
    NoAgent(String),
    /// The agent is not in a state that allows it.
    #[error("agent {agent} is {state}")]
    NotRunning {
        /// The agent.
        agent: String,
        /// Its state.
        state: String,
    },
    /// An agent of that id runs already.
    #[error("agent {0} exists and has not exited")]
    Exists(String),
    /// A value is not acceptable.
    #[error("{message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is not acceptable, at a field named at run time (`limits.memory.soft`).
    #[error("{field}: {message}")]
    InvalidAt {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No group of that name.
    #[error("no group {0:?}")]
    NoGroup(String),
    /// A group of that name exists.
    #[error("group {0:?} exists")]
    GroupExists(String),
    /// The group still has members.
    #[error("{0}")]
    GroupInUse(String),
    /// The kernel refused or did not finish in time.
    #[error("{0}")]
    Kernel(String),
    /// The kernel refused a value (a group's memory total under its members'
    /// usage); nothing was changed.
    #[error("{field}: {message}")]
    Refused {
        /// The field at fault (`totals.memory`).
        field: String,
        /// What the kernel refused, and why.
        message: String,
    },
    /// The state store cannot record the change (a full disk, say): refused rather than forgotten.
    #[error("the state store cannot record it: {0}")]
    Unrecorded(String),
    /// A budget has no room for a reservation (429).
    #[error("{message}")]
    Exhausted {
        /// The level that refused (`group:llm`).
        level: String,
        /// Its resource.
        resource: String,
        /// What is exhausted.
        message: String,
        /// When to try again, in ms from now; `None`: never (more than the limit).
        retry_after_ms: Option<u64>,
    },
    /// The policy throttles the agent's reservations of a resource (429).
    #[error("{message}")]
    Throttled {
        /// The resource.
        resource: String,
        /// The rate.
        message: String,
        /// When the next one is admitted, in ms from now.
        retry_after_ms: u64,
    },
    /// No open reservation of that id (for this caller).
    #[error("no open reservation {0}")]
    NoReservation(u64),
    /// No pool of that name.
    #[error("no pool {0:?}")]
    NoPool(String),
    /// The governor is stopping its fleet: no agent is started or adopted any more (503).
    #[error("allot is stopping its agents ({0}): no agent is started now")]
    Stopping(String),
}
