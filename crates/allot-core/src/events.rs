//! The event model (SPEC section 9): topics with the sketch's names,
//! sequence numbers and timestamps, and topic filters.

use crate::alerts::AlertLevel;
use crate::degradation::DegradationEvent;
use crate::ledger::ViolationKind;
use crate::policy::DecisionKind;
use crate::quota::AgentId;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// Soft-limit warnings (the sketch's topic).
pub const QUOTA_WARNING: &str = "resource_management.quota.warning";
/// Alerts at the warning level.
pub const ALERT_WARNING: &str = "resource_management.alert.warning";
/// Alerts at the critical level.
pub const ALERT_CRITICAL: &str = "resource_management.alert.critical";
/// Predictive alerts: a hard limit is forecast within the horizon.
pub const ALERT_FORECAST: &str = "resource_management.alert.forecast";
/// Degradation plans and rollbacks.
pub const DEGRADATION_PLAN: &str = "resource_management.degradation.plan";
/// Recovery stages.
pub const RECOVERY_STAGE: &str = "resource_management.recovery.stage";
/// Recommendations from analytics.
pub const RECOMMENDATION: &str = "resource_management.recommendation";
/// An agent started.
pub const AGENT_STARTED: &str = "resource_management.agent.started";
/// An agent exited.
pub const AGENT_EXITED: &str = "resource_management.agent.exited";
/// A running process was adopted as a new agent.
pub const AGENT_ADOPTED: &str = "resource_management.agent.adopted";
/// A live agent left by a previous governor was taken over.
pub const AGENT_READOPTED: &str = "resource_management.agent.readopted";
/// The kernel backstops written for an agent and its group.
pub const BACKSTOPS: &str = "resource_management.backstops";
/// An agent's quota changed at run time.
pub const QUOTA_CHANGED: &str = "resource_management.quota.changed";
/// A quota group was created, changed or deleted through the API.
pub const GROUP_CHANGED: &str = "resource_management.group.changed";
/// An agent acknowledged a request of its channel.
pub const REQUEST_ACKNOWLEDGED: &str = "resource_management.request.acknowledged";
/// The governor stopped and left its agents running.
pub const GOVERNOR_STOPPED: &str = "resource_management.governor.stopped";
/// The state store records again after failing (a full disk): how many writes were lost meanwhile.
pub const STORE_RECOVERED: &str = "resource_management.store.recovered";
/// A budget's window changed: it starts clean (what was spent under the old one is dropped).
pub const BUDGET_WINDOW_CHANGED: &str = "resource_management.budget.window_changed";
/// A reservation was refused: a budget is exhausted (at most once a minute per budget).
pub const BUDGET_EXHAUSTED: &str = "resource_management.budget.exhausted";
/// A reservation was settled above what it reserved: the overrun is charged.
pub const BUDGET_OVERRUN: &str = "resource_management.budget.overrun";
/// A reservation expired unsettled (charged where its budget charges expiries).
pub const BUDGET_EXPIRED: &str = "resource_management.budget.expired";
/// A group's or pool's budget is above its soft limit (at most once a minute per budget).
pub const BUDGET_SOFT: &str = "resource_management.budget.soft";
/// A pool was declared, replaced or deleted through the API.
pub const BUDGET_POOL_CHANGED: &str = "resource_management.budget.pool_changed";
/// A budget is above its hard limit after a spend that had to be counted (at most once a minute per budget).
pub const BUDGET_OVER_LIMIT: &str = "resource_management.budget.over_limit";
/// Cluster mode: this node registered under a lease.
pub const CLUSTER_REGISTERED: &str = "resource_management.cluster.registered";
/// Cluster mode: the node's slices changed (asked for more, or returned slack).
pub const CLUSTER_GRANT: &str = "resource_management.cluster.grant";
/// Cluster mode: the node cannot reach etcd and its deadline passed: safe capacity.
pub const CLUSTER_DEGRADED: &str = "resource_management.cluster.degraded";
/// Cluster mode: etcd answers again; the node's slices are in force again.
pub const CLUSTER_RECOVERED: &str = "resource_management.cluster.recovered";
/// Cluster mode: a dead node's slices were taken from it (after its lease expired).
pub const CLUSTER_RELEASED: &str = "resource_management.cluster.released";
/// Cluster mode: an agent moved between nodes (recorded on both).
pub const CLUSTER_MIGRATED: &str = "resource_management.cluster.migrated";

/// `resource_management.enforcement.<action>`.
pub fn enforcement_topic(action: &str) -> String {
    format!("resource_management.enforcement.{action}")
}

/// The topic of an alert.
pub fn alert_topic(level: AlertLevel) -> &'static str {
    match level {
        AlertLevel::Warning => ALERT_WARNING,
        AlertLevel::Critical => ALERT_CRITICAL,
    }
}

/// The topic a decision is published under: soft warnings keep the sketch's
/// `quota.warning`; other warnings and actions are `enforcement.<action>`.
pub fn decision_topic(kind: &DecisionKind) -> String {
    match kind {
        DecisionKind::Warn { violation } if violation.kind == ViolationKind::Soft => QUOTA_WARNING.to_owned(),
        DecisionKind::Degradation { event: DegradationEvent::Recovery { .. } } => RECOVERY_STAGE.to_owned(),
        DecisionKind::Degradation { .. } => DEGRADATION_PLAN.to_owned(),
        other => enforcement_topic(other.action_name().unwrap_or("unknown")),
    }
}

/// A published event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<D> {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// When it happened.
    pub at: Time,
    /// The topic.
    pub topic: String,
    /// The agent it is about, if any.
    pub agent: Option<AgentId>,
    /// The payload.
    pub data: D,
}

/// Hands out sequence numbers.
#[derive(Clone, Debug)]
pub struct Sequencer {
    next: u64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer { next: 1 }
    }
}

impl Sequencer {
    /// Continue after `last` (for example the last sequence number in the store).
    pub fn after(last: u64) -> Self {
        Sequencer { next: last.saturating_add(1) }
    }

    /// Stamp an event with the next sequence number.
    pub fn stamp<D>(&mut self, at: Time, topic: impl Into<String>, agent: Option<AgentId>, data: D) -> Event<D> {
        let seq = self.next;
        self.next = self.next.saturating_add(1);
        Event { seq, at, topic: topic.into(), agent, data }
    }
}

/// Whether `topic` matches `pattern`, where `*` matches any run of characters
/// (including dots): `resource_management.enforcement.*`, `*.warning`.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == topic;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !topic.starts_with(first) || topic.len() < first.len() + last.len() || !topic.ends_with(last) {
        return false;
    }
    let mut rest = &topic[first.len()..topic.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Violation;
    use crate::resource::Resource;
    use proptest::prelude::*;

    #[test]
    fn sequence_numbers_increase_and_continue_after_a_restart() {
        let mut s = Sequencer::default();
        assert_eq!(s.stamp(Time::ZERO, AGENT_STARTED, None, ()).seq, 1);
        assert_eq!(s.stamp(Time::ZERO, AGENT_STARTED, None, ()).seq, 2);
        assert_eq!(Sequencer::after(41).stamp(Time::ZERO, AGENT_EXITED, None, ()).seq, 42);
    }

    #[test]
    fn topics_keep_the_sketch_names() {
        let v = |kind| Violation { kind, resource: Resource::Cpu, usage: 2, limit: 1 };
        assert_eq!(decision_topic(&DecisionKind::Warn { violation: v(ViolationKind::Soft) }), "resource_management.quota.warning");
        assert_eq!(decision_topic(&DecisionKind::Warn { violation: v(ViolationKind::Hard) }), "resource_management.enforcement.warn");
        assert_eq!(
            decision_topic(&DecisionKind::Suspend { violation: v(ViolationKind::Hard), after_scale_down: false }),
            "resource_management.enforcement.suspend"
        );
        assert_eq!(alert_topic(AlertLevel::Critical), "resource_management.alert.critical");
    }

    #[test]
    fn topic_globs() {
        assert!(topic_matches("resource_management.enforcement.*", "resource_management.enforcement.throttle"));
        assert!(topic_matches("*.warning", "resource_management.alert.warning"));
        assert!(topic_matches("*", "x"));
        assert!(topic_matches("a*b*c", "abc"));
        assert!(!topic_matches("a*b*c", "acb"));
        assert!(!topic_matches("resource_management.alert.*", "resource_management.quota.warning"));
        assert!(!topic_matches("ab*ba", "aba"), "prefix and suffix must not overlap");
    }

    proptest! {
        #[test]
        fn a_topic_matches_itself_and_star(topic in "[a-z_.]{0,30}") {
            prop_assert!(topic_matches(&topic, &topic));
            prop_assert!(topic_matches("*", &topic));
        }
    }
}
