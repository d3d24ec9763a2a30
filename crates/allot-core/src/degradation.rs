//! Graceful degradation and staged recovery (SPEC section 8).
//!
//! [`level`] and [`strategies`] are the sketch's tables; [`Degradation`]
//! tracks one agent's plan for one resource: it issues a plan when a
//! violation starts or deepens, removes strategies in reverse order one stage
//! at a time once usage has been healthy long enough, and rolls back to the
//! last plan on a new violation.

use crate::resource::Resource;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How hard an agent is asked to cut back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// No degradation.
    None,
    /// usage / limit > 0.9.
    Minimal,
    /// usage / limit > 1.0.
    Moderate,
    /// usage / limit > 1.2.
    Aggressive,
    /// usage / limit > 1.5.
    Emergency,
}

/// The level for `usage` against `limit` (the sketch's table).
pub fn level(usage: u64, limit: u64) -> Level {
    if limit == 0 {
        return if usage > 0 { Level::Emergency } else { Level::None };
    }
    // Compare usage/limit with the thresholds in integer tenths: exact.
    let (u, l) = (u128::from(usage) * 10, u128::from(limit));
    if u > l * 15 {
        Level::Emergency
    } else if u > l * 12 {
        Level::Aggressive
    } else if u > l * 10 {
        Level::Moderate
    } else if u > l * 9 {
        Level::Minimal
    } else {
        Level::None
    }
}

/// What an agent can do to use less.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Compute with less precision.
    ReducePrecision,
    /// Cache more, recompute less.
    CacheAggressively,
    /// Batch operations.
    BatchOperations,
    /// Drop work that is not essential.
    DropNonEssential,
    /// Use a cheaper algorithm or model.
    UseFallbackAlgorithm,
}

/// A strategy with the parameters sent to the agent (the sketch's values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum StrategyStep {
    /// `reduce_precision`.
    ReducePrecision {
        /// Fraction of precision to give up.
        precision_reduction: f64,
        /// Which operations.
        affected_operations: Vec<String>,
    },
    /// `cache_aggressively`.
    CacheAggressively {
        /// Factor for the cache size.
        cache_size_increase: f64,
        /// Factor for how long entries live.
        cache_duration_increase: f64,
    },
    /// `batch_operations`.
    BatchOperations {
        /// Factor for the batch size.
        batch_size_increase: f64,
        /// Delay between batches, in milliseconds.
        batch_delay_ms: u64,
    },
    /// `drop_non_essential`.
    DropNonEssential {
        /// What to drop.
        operations_to_drop: Vec<String>,
    },
    /// `use_fallback_algorithm`.
    UseFallbackAlgorithm {
        /// What to fall back to.
        fallback: String,
    },
}

impl StrategyStep {
    /// The step for a strategy, with the sketch's parameters.
    pub fn of(s: Strategy) -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        match s {
            Strategy::ReducePrecision => {
                StrategyStep::ReducePrecision { precision_reduction: 0.5, affected_operations: strings(&["calculations", "predictions"]) }
            }
            Strategy::CacheAggressively => StrategyStep::CacheAggressively { cache_size_increase: 2.0, cache_duration_increase: 5.0 },
            Strategy::BatchOperations => StrategyStep::BatchOperations { batch_size_increase: 3.0, batch_delay_ms: 1000 },
            Strategy::DropNonEssential => StrategyStep::DropNonEssential {
                operations_to_drop: strings(&["detailed_logging", "metrics_collection", "optional_validations"]),
            },
            Strategy::UseFallbackAlgorithm => StrategyStep::UseFallbackAlgorithm { fallback: "cheaper_model_or_algorithm".into() },
        }
    }

    /// Which strategy this is.
    pub fn strategy(&self) -> Strategy {
        match self {
            StrategyStep::ReducePrecision { .. } => Strategy::ReducePrecision,
            StrategyStep::CacheAggressively { .. } => Strategy::CacheAggressively,
            StrategyStep::BatchOperations { .. } => Strategy::BatchOperations,
            StrategyStep::DropNonEssential { .. } => Strategy::DropNonEssential,
            StrategyStep::UseFallbackAlgorithm { .. } => Strategy::UseFallbackAlgorithm,
        }
    }
}

/// The strategies for a resource at a level, in the order they are applied.
pub fn strategies(resource: &Resource, level: Level) -> Vec<Strategy> {
    use Strategy::*;
    let n = match level {
        Level::None => return Vec::new(),
        Level::Minimal => 1,
        Level::Moderate => 2,
        Level::Aggressive => 3,
        Level::Emergency => 4,
    };
    let ladder: &[Strategy] = match resource {
        Resource::Memory => &[CacheAggressively, BatchOperations, ReducePrecision, DropNonEssential],
        Resource::Cpu => &[BatchOperations, UseFallbackAlgorithm, ReducePrecision, DropNonEssential],
        Resource::Custom(_) => &[UseFallbackAlgorithm, BatchOperations, ReducePrecision, DropNonEssential],
        // processes, files, connections, disk, disk_io, network: batch, then drop.
        _ => {
            return if level >= Level::Aggressive { vec![BatchOperations, DropNonEssential] } else { vec![BatchOperations] };
        }
    };
    ladder[..n].to_vec()
}

/// A degradation plan sent to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The resource under pressure.
    pub resource: Resource,
    /// The level.
    pub level: Level,
    /// The strategies, in order of application.
    pub strategies: Vec<StrategyStep>,
    /// Fraction of current usage to shed to get back to 80 % of the limit.
    pub target_reduction: f64,
    /// How long the agent has to apply the plan, in milliseconds.
    pub timeline_ms: u64,
}

/// How long an agent gets to apply a plan of each level. The sketch names
/// this (`calculate_degradation_timeline`) without giving values; these are ours.
pub fn timeline(level: Level) -> Duration {
    Duration::from_secs(match level {
        Level::None => 0,
        Level::Minimal => 300,
        Level::Moderate => 120,
        Level::Aggressive => 60,
        Level::Emergency => 10,
    })
}

/// Build the plan for `usage` against hard limit `limit` at `level`.
pub fn plan(resource: &Resource, level: Level, usage: u64, limit: u64) -> Plan {
    let target = limit as f64 * 0.8;
    let target_reduction = if usage == 0 { 0.0 } else { (1.0 - target / usage as f64).clamp(0.0, 1.0) };
    Plan {
        resource: resource.clone(),
        level,
        strategies: strategies(resource, level).into_iter().map(StrategyStep::of).collect(),
        target_reduction,
        timeline_ms: crate::time::duration_millis(timeline(level)),
    }
}

/// One stage of a recovery plan: a strategy the agent may stop applying.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStage {
    /// The resource.
    pub resource: Resource,
    /// 1-based stage number.
    pub stage: usize,
    /// How many stages the recovery has.
    pub of: usize,
    /// The strategy removed.
    pub remove: Strategy,
    /// The strategies still in force after this stage.
    pub remaining: Vec<Strategy>,
}

/// What the tracker produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DegradationEvent {
    /// A new or deeper plan.
    Plan {
        /// The plan.
        plan: Plan,
    },
    /// A stage of recovery.
    Recovery {
        /// The stage.
        stage: RecoveryStage,
    },
    /// A new violation during recovery: the last plan is in force again.
    Rollback {
        /// The plan restored.
        plan: Plan,
    },
}

/// Timing of recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryTiming {
    /// Healthy time before the first stage (default 60 s).
    pub dwell: Duration,
    /// Time between stages (default 30 s).
    pub stage_interval: Duration,
}

impl Default for RecoveryTiming {
    fn default() -> Self {
        RecoveryTiming { dwell: Duration::from_secs(60), stage_interval: Duration::from_secs(30) }
    }
}

/// One agent's degradation state for one resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Degradation {
    active: Option<Plan>,
    removed: usize,
}

impl Degradation {
    /// The plan in force, if any, and how many of its strategies were removed.
    pub fn active(&self) -> Option<(&Plan, usize)> {
        self.active.as_ref().map(|p| (p, self.removed))
    }

    /// Feed one observation: `violating` says whether any limit is violated.
    pub fn observe(&mut self, resource: &Resource, usage: u64, hard: u64, violating: bool) -> Option<DegradationEvent> {
        if !violating {
            return None;
        }
        let lvl = level(usage, hard).max(Level::Minimal);
        match &self.active {
            Some(p) if self.removed > 0 => {
                let restored = if lvl > p.level { plan(resource, lvl, usage, hard) } else { p.clone() };
                self.removed = 0;
                self.active = Some(restored.clone());
                Some(DegradationEvent::Rollback { plan: restored })
            }
            Some(p) if lvl <= p.level => None,
            _ => {
                let p = plan(resource, lvl, usage, hard);
                self.active = Some(p.clone());
                Some(DegradationEvent::Plan { plan: p })
            }
        }
    }

    /// When the next recovery stage is due, given since when usage has been healthy.
    pub fn next_stage_due(&self, healthy_since: Option<Time>, timing: RecoveryTiming) -> Option<Time> {
        let _ = self.active.as_ref()?;
        let since = healthy_since?;
        let extra = timing.stage_interval.saturating_mul(u32::try_from(self.removed).unwrap_or(u32::MAX));
        Some(since.plus(timing.dwell).plus(extra))
    }

    /// Carry out the next recovery stage.
    pub fn advance(&mut self) -> Option<DegradationEvent> {
        let p = self.active.as_ref()?;
        let total = p.strategies.len();
        let order: Vec<Strategy> = p.strategies.iter().map(StrategyStep::strategy).collect();
        let remove = *order.get(total.checked_sub(self.removed + 1)?)?;
        self.removed += 1;
        let remaining = order[..total - self.removed].to_vec();
        let stage = RecoveryStage { resource: p.resource.clone(), stage: self.removed, of: total, remove, remaining };
        if self.removed == total {
            self.active = None;
            self.removed = 0;
        }
        Some(DegradationEvent::Recovery { stage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_sketch_table() {
        assert_eq!(level(90, 100), Level::None);
        assert_eq!(level(91, 100), Level::Minimal);
        assert_eq!(level(100, 100), Level::Minimal);
        assert_eq!(level(101, 100), Level::Moderate);
        assert_eq!(level(121, 100), Level::Aggressive);
        assert_eq!(level(150, 100), Level::Aggressive);
        assert_eq!(level(151, 100), Level::Emergency);
        assert_eq!(level(u64::MAX, u64::MAX / 2), Level::Emergency);
        assert_eq!(level(u64::MAX, u64::MAX - 1), Level::Moderate);
    }

    #[test]
    fn strategies_per_resource_follow_the_sketch() {
        use Strategy::*;
        assert_eq!(strategies(&Resource::Memory, Level::Minimal), [CacheAggressively]);
        assert_eq!(
            strategies(&Resource::Memory, Level::Emergency),
            [CacheAggressively, BatchOperations, ReducePrecision, DropNonEssential]
        );
        assert_eq!(strategies(&Resource::Cpu, Level::Moderate), [BatchOperations, UseFallbackAlgorithm]);
        assert_eq!(strategies(&Resource::Processes, Level::Moderate), [BatchOperations]);
        assert_eq!(strategies(&Resource::Network, Level::Emergency), [BatchOperations, DropNonEssential]);
        assert_eq!(strategies(&Resource::Custom("tokens".into()), Level::Minimal), [UseFallbackAlgorithm]);
        assert!(strategies(&Resource::Cpu, Level::None).is_empty());
        let step = StrategyStep::of(BatchOperations);
        assert_eq!(step, StrategyStep::BatchOperations { batch_size_increase: 3.0, batch_delay_ms: 1000 });
    }

    #[test]
    fn plans_deepen_recover_in_reverse_and_roll_back() {
        let r = Resource::Memory;
        let mut d = Degradation::default();
        assert_eq!(d.observe(&r, 50, 100, false), None);
        let Some(DegradationEvent::Plan { plan }) = d.observe(&r, 60, 100, true) else { panic!() };
        assert_eq!(plan.level, Level::Minimal, "a soft violation gets at least a minimal plan");
        assert_eq!(d.observe(&r, 70, 100, true), None, "same level: nothing new");
        let Some(DegradationEvent::Plan { plan }) = d.observe(&r, 130, 100, true) else { panic!() };
        assert_eq!(plan.level, Level::Aggressive);
        assert!((plan.target_reduction - (1.0 - 80.0 / 130.0)).abs() < 1e-9);
        let t = RecoveryTiming::default();
        assert_eq!(d.next_stage_due(None, t), None);
        assert_eq!(d.next_stage_due(Some(Time::from_secs(10)), t), Some(Time::from_secs(70)));
        let Some(DegradationEvent::Recovery { stage }) = d.advance() else { panic!() };
        assert_eq!((stage.stage, stage.of, stage.remove), (1, 3, Strategy::ReducePrecision));
        assert_eq!(d.next_stage_due(Some(Time::from_secs(10)), t), Some(Time::from_secs(100)));
        let Some(DegradationEvent::Rollback { plan }) = d.observe(&r, 60, 100, true) else { panic!() };
        assert_eq!(plan.level, Level::Aggressive, "rolls back to the last plan");
        for i in 1..=3 {
            let Some(DegradationEvent::Recovery { stage }) = d.advance() else { panic!() };
            assert_eq!(stage.stage, i);
        }
        assert_eq!(d.active(), None, "fully recovered");
        assert_eq!(d.advance(), None);
    }
}
