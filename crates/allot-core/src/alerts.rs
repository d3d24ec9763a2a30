//! Alert thresholds and the 60 s per {agent, resource, level} rate limit.

use crate::limits::Limit;
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// The two alert levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Usage above the warning level.
    Warning,
    /// Usage above the critical level.
    Critical,
}

impl AlertLevel {
    /// The level's name in topics.
    pub fn name(self) -> &'static str {
        match self {
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        }
    }
}

/// Alert thresholds for one resource, in its internal unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    /// Alert `warning` above this.
    pub warning_level: u64,
    /// Alert `critical` above this.
    pub critical_level: u64,
}

impl Threshold {
    /// The default thresholds for a limit: warning above soft, critical above hard.
    pub fn from_limit(limit: &Limit) -> Self {
        Threshold { warning_level: limit.soft, critical_level: limit.hard }
    }

    /// The level `value` reaches, if any.
    pub fn level(&self, value: u64) -> Option<AlertLevel> {
        if value > self.critical_level {
            Some(AlertLevel::Critical)
        } else if value > self.warning_level {
            Some(AlertLevel::Warning)
        } else {
            None
        }
    }
}

/// An alert to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The level.
    pub level: AlertLevel,
    /// The agent.
    pub agent: AgentId,
    /// The resource.
    pub resource: Resource,
    /// The value that crossed the threshold.
    pub value: u64,
    /// The thresholds.
    pub threshold: Threshold,
    /// When it was measured.
    pub at: Time,
}

/// The default minimum time between two identical alerts.
pub const ALERT_INTERVAL: Duration = Duration::from_secs(60);

/// Decides which alerts to publish, at most one per {agent, resource, level}
/// per interval.
#[derive(Clone, Debug)]
pub struct AlertLimiter {
    interval: Duration,
    /// Per agent (forgotten in one step), per resource and level.
    last: HashMap<AgentId, HashMap<(Resource, AlertLevel), Time>>,
}

impl Default for AlertLimiter {
    fn default() -> Self {
        AlertLimiter::new(ALERT_INTERVAL)
    }
}

impl AlertLimiter {
    /// A limiter with a custom interval.
    pub fn new(interval: Duration) -> Self {
        AlertLimiter { interval, last: HashMap::new() }
    }

    /// The alert for this observation, unless none is due or the same alert
    /// was published less than the interval ago.
    pub fn check(&mut self, agent: &AgentId, resource: &Resource, value: u64, threshold: Threshold, now: Time) -> Option<Alert> {
        let level = threshold.level(value)?;
        let key = (resource.clone(), level);
        if let Some(last) = self.last.get(agent).and_then(|m| m.get(&key)) {
            if now.since(*last) < self.interval {
                return None;
            }
        }
        self.last.entry(agent.clone()).or_default().insert(key, now);
        Some(Alert { level, agent: agent.clone(), resource: resource.clone(), value, threshold, at: now })
    }

    /// Forget an agent's alert history.
    pub fn forget(&mut self, agent: &AgentId) {
        self.last.remove(agent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_alert_at_most_once_per_minute_per_agent_resource_and_level() {
        let mut l = AlertLimiter::default();
        let a = AgentId::new("a").unwrap();
        let b = AgentId::new("b").unwrap();
        let th = Threshold { warning_level: 10, critical_level: 20 };
        let t = Time::from_secs(1000);
        assert_eq!(l.check(&a, &Resource::Cpu, 5, th, t), None);
        assert_eq!(l.check(&a, &Resource::Cpu, 15, th, t).unwrap().level, AlertLevel::Warning);
        assert_eq!(l.check(&a, &Resource::Cpu, 15, th, t.plus(Duration::from_secs(59))), None);
        assert_eq!(l.check(&a, &Resource::Cpu, 25, th, t.plus(Duration::from_secs(59))).unwrap().level, AlertLevel::Critical);
        assert!(l.check(&b, &Resource::Cpu, 15, th, t).is_some(), "other agent");
        assert!(l.check(&a, &Resource::Memory, 15, th, t).is_some(), "other resource");
        assert!(l.check(&a, &Resource::Cpu, 15, th, t.plus(Duration::from_secs(60))).is_some(), "after 60 s");
        l.forget(&a);
        assert!(l.check(&a, &Resource::Memory, 15, th, t.plus(Duration::from_secs(1))).is_some());
    }

    #[test]
    fn default_thresholds_come_from_the_limit() {
        let t = Threshold::from_limit(&Limit::new(50, 100, crate::limits::Action::Warn));
        assert_eq!((t.level(50), t.level(51), t.level(101)), (None, Some(AlertLevel::Warning), Some(AlertLevel::Critical)));
    }
}
