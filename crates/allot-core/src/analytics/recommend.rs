//! Recommendations: per resource, per agent (one `change_group` for all its
//! resources), and the no-flapping rule ([`standing`], [`replaces`]).

use super::{Forecast, Pattern, PatternKind};
use crate::resource::{Resource, Unit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recommendation type (the sketch's four).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationKind {
    /// Raise the quota before the limit is hit.
    IncreaseQuota,
    /// Lower an oversized quota.
    DecreaseQuota,
    /// Another group fits the usage better.
    ChangeGroup,
    /// Spiky usage: smooth it in the agent.
    OptimizeCode,
}

/// A recommendation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Type.
    pub kind: RecommendationKind,
    /// Suggested hard limit (or group name for change_group in `group`).
    pub suggested_hard: Option<u64>,
    /// Suggested group, for change_group.
    pub group: Option<String>,
    /// Why, for a person.
    pub rationale: String,
    /// Confidence in [0, 1].
    pub confidence: f64,
}

/// The safety margin over the 95th percentile for suggested limits (VPA uses
/// the 90th percentile + 15 %; allot uses the 95th, which suits agents whose
/// overruns are punished, with the same margin).
pub const MARGIN: f64 = 1.15;

/// A group's per-agent hard limit for the resource, for change_group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFit {
    /// Group name.
    pub group: String,
    /// Its soft limit for the resource.
    pub soft: u64,
    /// Its hard limit for the resource.
    pub hard: u64,
}

/// The resource name under which an agent-wide recommendation (one
/// `change_group` for all its resources) is stored and published.
pub const AGENT_WIDE: &str = "*";

/// What a resource needs: the 95th percentile plus the margin; a periodic
/// series keeps its peak (it comes back every period), so its peak plus the
/// margin.
fn need(p: &Pattern) -> f64 {
    let c = &p.characteristics;
    let base = if p.kind == PatternKind::Periodic { c.p95.max(c.peak) } else { c.p95 };
    (base * MARGIN).max(0.0)
}

/// `v` rounded up to a value that reads well in the unit (whole Mi or Ki
/// for large byte sizes), so a suggestion prints short and exact.
fn round_up(unit: Option<Unit>, v: f64) -> u64 {
    let v = v.ceil().max(0.0) as u64;
    let step = match unit {
        Some(Unit::Bytes) if v >= 64 << 20 => 1 << 20,
        Some(Unit::Bytes) if v >= 64 << 10 => 1 << 10,
        _ => 1,
    };
    v.div_ceil(step).saturating_mul(step)
}

/// A value for a rationale: in the unit's human form when known.
fn show(unit: Option<Unit>, v: f64) -> String {
    match unit {
        Some(u) => crate::quantity::format_approx(u, v.max(0.0).round() as u64),
        None => format!("{v:.0}"),
    }
}

/// A duration for a rationale, to the second.
fn show_secs(secs: f64) -> String {
    crate::quantity::format_duration(std::time::Duration::from_secs(secs.clamp(0.0, 1e12) as u64))
}

/// The answer for one resource on its own: increase (growing, only above
/// the current hard limit), optimize (bursty) or decrease (the need under
/// half the hard limit; a periodic series never below its peak).
fn for_resource(p: &Pattern, unit: Option<Unit>, hard: u64, horizon_secs: f64, fc: Option<&Forecast>) -> Option<Recommendation> {
    let c = &p.characteristics;
    match p.kind {
        PatternKind::Growing => {
            // Room for the growth expected over the horizon, with the margin.
            let projected = (c.p95 + c.slope_per_sec.max(0.0) * horizon_secs) * MARGIN;
            let suggested = round_up(unit, projected);
            if suggested <= hard {
                return None; // the current limit already holds the growth over the horizon
            }
            let when = match fc {
                Some(f) if f.eta_secs <= 0.0 => "and it is already above the hard limit".to_owned(),
                Some(f) => format!(
                    "at this rate it reaches the hard limit in about {} ({}-{})",
                    show_secs(f.eta_secs),
                    show_secs(f.eta_low_secs),
                    show_secs(f.eta_high_secs.min(1e12))
                ),
                None => "no crossing of the hard limit is forecast".to_owned(),
            };
            Some(Recommendation {
                kind: RecommendationKind::IncreaseQuota,
                suggested_hard: Some(suggested),
                group: None,
                rationale: format!(
                    "usage grows by {}/s ({:.0} % of its mean per hour, R^2 {:.2}), {when}; suggested hard: the 95th percentile plus the growth over {}, plus 15 %, above the current hard {}",
                    show(unit, c.slope_per_sec),
                    c.trend_per_hour * 100.0,
                    c.trend_r2,
                    show_secs(horizon_secs),
                    show(unit, hard as f64)
                ),
                confidence: p.confidence,
            })
        }
        PatternKind::Bursty => Some(Recommendation {
            kind: RecommendationKind::OptimizeCode,
            suggested_hard: None,
            group: None,
            rationale: format!(
                "{:.1} % of samples are spikes far above the usual level (peak {} against mean {}); smoothing them would avoid violations",
                c.spike_fraction * 100.0,
                show(unit, c.peak),
                show(unit, c.mean)
            ),
            confidence: p.confidence * 0.8,
        }),
        PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining => {
            let need = need(p);
            let suggested = round_up(unit, need);
            if need <= 0.0 || (suggested as f64) >= hard as f64 * 0.5 {
                return None;
            }
            let basis = if p.kind == PatternKind::Periodic {
                format!("the peak {} of a periodic series", show(unit, c.peak.max(c.p95)))
            } else {
                format!("the 95th percentile {}", show(unit, c.p95))
            };
            Some(Recommendation {
                kind: RecommendationKind::DecreaseQuota,
                suggested_hard: Some(suggested),
                group: None,
                rationale: format!(
                    "{basis} plus 15 % is {}, under half of the hard limit {}",
                    show(unit, suggested as f64),
                    show(unit, hard as f64)
                ),
                confidence: p.confidence,
            })
        }
    }
}

/// Recommend from a pattern, the current limits and the groups available,
/// for a single series: its resource is all the agent uses (see
/// [`recommend_agent`] for an agent with several). `change_group` names the
/// smallest group whose limits cover the need (for a periodic series, its
/// peak) when that is not the current group and is below the current hard
/// limit; else increase, decrease or optimize as [`recommend_agent`] does.
pub fn recommend(
    p: &Pattern,
    _soft: u64,
    hard: u64,
    current_group: &str,
    groups: &[GroupFit],
    horizon_secs: f64,
    fc: Option<&Forecast>,
) -> Option<Recommendation> {
    let c = &p.characteristics;
    if matches!(p.kind, PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining) {
        let need = need(p);
        let best = groups.iter().filter(|g| g.hard as f64 >= need && g.soft as f64 >= c.mean).min_by_key(|g| g.hard);
        if let Some(g) = best.filter(|g| g.group != current_group && g.hard < hard) {
            return Some(Recommendation {
                kind: RecommendationKind::ChangeGroup,
                suggested_hard: Some(g.hard),
                group: Some(g.group.clone()),
                rationale: format!("the need {need:.0} fits group {} (hard {}), smaller than the current hard {hard}", g.group, g.hard),
                confidence: p.confidence * 0.9,
            });
        }
    }
    for_resource(p, None, hard, horizon_secs, fc)
}

/// One analysed resource of an agent, for [`recommend_agent`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceAnalysis {
    /// The resource.
    pub resource: Resource,
    /// Its pattern over the window.
    pub pattern: Pattern,
    /// Its current hard limit.
    pub hard: u64,
    /// When its trend reaches the hard limit.
    pub forecast: Option<Forecast>,
}

/// A group's per-agent limits, for `change_group`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupLimits {
    /// Group name.
    pub group: String,
    /// Soft and hard limit per resource it limits.
    pub limits: BTreeMap<Resource, (u64, u64)>,
}

/// What an agent is recommended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentRecommendations {
    /// One answer for the whole agent: the smallest group whose limits cover
    /// every analysed resource, when that is another group than its own and
    /// smaller than its current limits.
    pub change_group: Option<Recommendation>,
    /// Otherwise, per resource: increase, decrease or optimize.
    pub resources: Vec<(Resource, Recommendation)>,
}

/// Whether `g` covers resource `r`: no limit on it, or a hard limit at or
/// above its need and a soft limit at or above its mean.
fn covers(g: &GroupLimits, r: &ResourceAnalysis) -> bool {
    g.limits.get(&r.resource).is_none_or(|(soft, hard)| *hard as f64 >= need(&r.pattern) && *soft as f64 >= r.pattern.characteristics.mean)
}

/// How large `g` is next to the agent's current limits: the sum over the
/// analysed resources it limits of its hard limit over the current one.
fn relative_size(g: &GroupLimits, resources: &[ResourceAnalysis]) -> f64 {
    resources.iter().filter_map(|r| g.limits.get(&r.resource).map(|(_, hard)| *hard as f64 / r.hard.max(1) as f64)).sum()
}

/// Recommend for one agent from all its analysed resources: one
/// `change_group` when the smallest group covering every resource (none
/// growing or bursty) is another group, no larger than the current limits
/// on any resource and smaller on one; else an answer per resource.
pub fn recommend_agent(
    current_group: &str,
    resources: &[ResourceAnalysis],
    groups: &[GroupLimits],
    horizon_secs: f64,
) -> AgentRecommendations {
    let settled = !resources.is_empty()
        && resources.iter().all(|r| matches!(r.pattern.kind, PatternKind::Steady | PatternKind::Periodic | PatternKind::Declining));
    if settled {
        let smallest = groups
            .iter()
            .filter(|g| resources.iter().all(|r| covers(g, r)))
            .min_by(|a, b| relative_size(a, resources).total_cmp(&relative_size(b, resources)).then_with(|| a.group.cmp(&b.group)));
        let smaller = |g: &GroupLimits| {
            let limited: Vec<(u64, u64)> =
                resources.iter().filter_map(|r| g.limits.get(&r.resource).map(|(_, hard)| (*hard, r.hard))).collect();
            limited.iter().all(|(g, cur)| g <= cur) && limited.iter().any(|(g, cur)| g < cur)
        };
        if let Some(g) = smallest.filter(|g| g.group != current_group && smaller(g)) {
            let fits: Vec<String> = resources
                .iter()
                .filter_map(|r| {
                    let (_, hard) = g.limits.get(&r.resource)?;
                    let unit = Some(r.resource.unit());
                    Some(format!("{} needs {} of {}", r.resource, show(unit, need(&r.pattern)), show(unit, *hard as f64)))
                })
                .collect();
            let confidence = resources.iter().map(|r| r.pattern.confidence).fold(1.0f64, f64::min) * 0.9;
            return AgentRecommendations {
                change_group: Some(Recommendation {
                    kind: RecommendationKind::ChangeGroup,
                    suggested_hard: None,
                    group: Some(g.group.clone()),
                    rationale: format!(
                        "group {} is the smallest whose limits cover every resource (the 95th percentile, or a periodic peak, plus 15 %): {}",
                        g.group,
                        fits.join(", ")
                    ),
                    confidence,
                }),
                resources: Vec::new(),
            };
        }
    }
    let resources = resources
        .iter()
        .filter_map(|r| {
            for_resource(&r.pattern, Some(r.resource.unit()), r.hard, horizon_secs, r.forecast.as_ref())
                .map(|rec| (r.resource.clone(), rec))
        })
        .collect();
    AgentRecommendations { change_group: None, resources }
}

/// Whether a standing recommendation still makes sense against the current
/// hard limit: an increase must be above it, a decrease below it.
fn still_valid(r: &Recommendation, hard: Option<u64>) -> bool {
    match (r.kind, r.suggested_hard, hard) {
        (RecommendationKind::IncreaseQuota, Some(s), Some(h)) => s > h,
        (RecommendationKind::DecreaseQuota, Some(s), Some(h)) => s < h,
        _ => true,
    }
}

/// The recommendation that stands after an analysis: none when the
/// analysis recommends nothing (an older one does not outlive the analysis
/// that replaced it); the previous one when the new one does not
/// [`replaces`] it and it still makes sense against the current hard limit;
/// else the new one.
pub fn standing(old: Option<&Recommendation>, new: Option<Recommendation>, hard: Option<u64>) -> Option<Recommendation> {
    let new = new?;
    match old {
        Some(o) if !replaces(Some(o), &new) && still_valid(o, hard) => Some(o.clone()),
        _ => Some(new),
    }
}

/// Keeps recommendations from flapping: a new one replaces the old only when
/// its type changes or its suggested value differs by more than 10 %.
pub fn replaces(old: Option<&Recommendation>, new: &Recommendation) -> bool {
    let Some(old) = old else { return true };
    if old.kind != new.kind || old.group != new.group {
        return true;
    }
    match (old.suggested_hard, new.suggested_hard) {
        (Some(a), Some(b)) if a > 0 => (b as f64 - a as f64).abs() / a as f64 > 0.10,
        (a, b) => a != b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{Characteristics, PATTERNS, forecast, series};
    use proptest::prelude::*;

    #[test]
    fn forecasts_and_flapping() {
        let s = series(|t| 100.0 + 2.0 * t, 300, 1.0);
        let f = forecast(&s, 1000.0).unwrap();
        assert!((f.eta_secs - (1000.0 - 698.0) / 2.0).abs() < 1.0, "{f:?}");
        assert!(forecast(&series(|t| 100.0 - t, 50, 1.0), 1000.0).is_none());
        let r = |v| Recommendation {
            kind: RecommendationKind::DecreaseQuota,
            suggested_hard: Some(v),
            group: None,
            rationale: String::new(),
            confidence: 1.0,
        };
        assert!(replaces(None, &r(100)));
        assert!(!replaces(Some(&r(100)), &r(109)));
        assert!(replaces(Some(&r(100)), &r(111)));
    }

    fn pattern(kind: PatternKind, mean: f64, p95: f64, peak: f64, slope_per_sec: f64) -> Pattern {
        Pattern {
            kind,
            confidence: 0.9,
            characteristics: Characteristics {
                count: 600,
                span_secs: 600.0,
                mean,
                variance: 0.0,
                cv: 0.0,
                min: 0.0,
                peak,
                p95,
                slope_per_sec,
                trend_per_hour: slope_per_sec * 3600.0 / mean.max(1.0),
                trend_r2: 0.9,
                spike_fraction: 0.0,
                autocorrelation: 0.0,
                period_secs: None,
            },
        }
    }

    #[test]
    fn an_increase_is_above_the_current_limit() {
        // Growing slowly, far under its limit: the projection over the
        // horizon (115 % of 100 + 600 s x 0.01) stays under 1000.
        let p = pattern(PatternKind::Growing, 90.0, 100.0, 101.0, 0.01);
        assert_eq!(recommend(&p, 800, 1000, "g", &[], 600.0, None), None);
        let p = pattern(PatternKind::Growing, 900.0, 950.0, 960.0, 0.5);
        let r = recommend(&p, 800, 1000, "g", &[], 600.0, None).unwrap();
        assert_eq!(r.kind, RecommendationKind::IncreaseQuota);
        assert!(r.suggested_hard.unwrap() > 1000, "{r:?}");
    }

    #[test]
    fn a_periodic_series_keeps_its_peak() {
        // Narrow peaks: the 95th percentile is far under the peak, which
        // comes back every period.
        let p = pattern(PatternKind::Periodic, 200.0, 300.0, 1000.0, 0.0);
        let r = recommend(&p, 5000, 10_000, "g", &[], 600.0, None).unwrap();
        assert_eq!(r.kind, RecommendationKind::DecreaseQuota);
        assert!(r.suggested_hard.unwrap() >= 1000, "{r:?}");
        // A peak over half the limit: no decrease at all.
        let p = pattern(PatternKind::Periodic, 200.0, 300.0, 4500.0, 0.0);
        assert_eq!(recommend(&p, 5000, 10_000, "g", &[], 600.0, None), None);
    }

    fn groups() -> Vec<GroupLimits> {
        let g = |name: &str, m: (u64, u64), c: (u64, u64)| GroupLimits {
            group: name.into(),
            limits: [(Resource::Memory, m), (Resource::Cpu, c)].into_iter().collect(),
        };
        vec![
            g("small", (50 << 20, 100 << 20), (50, 100)),
            g("medium", (200 << 20, 500 << 20), (150, 300)),
            g("large", (1 << 30, 2 << 30), (400, 800)),
        ]
    }

    fn steady(resource: Resource, mean: f64, hard: u64) -> ResourceAnalysis {
        ResourceAnalysis { resource, pattern: pattern(PatternKind::Steady, mean, mean * 1.05, mean * 1.1, 0.0), hard, forecast: None }
    }

    #[test]
    fn one_group_change_per_agent_for_all_its_resources() {
        // Memory and cpu both fit "small": one change_group, nothing per resource.
        let agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 10.0, 300)];
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        let change = r.change_group.unwrap();
        assert_eq!((change.kind, change.group.as_deref()), (RecommendationKind::ChangeGroup, Some("small")));
        assert!(change.rationale.contains("memory") && change.rationale.contains("cpu"), "{}", change.rationale);
        assert!(r.resources.is_empty(), "{:?}", r.resources);
        // cpu needs more than "small" holds: "medium", its own group, is the
        // smallest that covers both, so no group change; decreases per resource.
        let agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 140.0, 300)];
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        assert_eq!(r.change_group, None);
        assert_eq!(r.resources.len(), 1, "memory only (cpu needs 170m of 300m): {:?}", r.resources);
        assert_eq!(r.resources[0].0, Resource::Memory);
        assert_eq!(r.resources[0].1.kind, RecommendationKind::DecreaseQuota);
        // Memory growing: no group change while any resource grows.
        let mut agent = [steady(Resource::Memory, 20e6, 500 << 20), steady(Resource::Cpu, 10.0, 300)];
        agent[0].pattern = pattern(PatternKind::Growing, 20e6, 30e6, 31e6, 1e6);
        let r = recommend_agent("medium", &agent, &groups(), 600.0);
        assert_eq!(r.change_group, None);
        assert!(r.resources.iter().any(|(res, x)| *res == Resource::Memory && x.kind == RecommendationKind::IncreaseQuota), "{r:?}");
    }

    #[test]
    fn the_standing_recommendation_follows_the_latest_analysis() {
        let inc = |v| Recommendation {
            kind: RecommendationKind::IncreaseQuota,
            suggested_hard: Some(v),
            group: None,
            rationale: String::new(),
            confidence: 1.0,
        };
        // Nothing recommended now: nothing stands.
        assert_eq!(standing(Some(&inc(1000)), None, Some(800)), None);
        // Within 10 %: the old one stands, while it is still an increase.
        assert_eq!(standing(Some(&inc(1000)), Some(inc(1050)), Some(800)), Some(inc(1000)));
        // The limit was raised to it: the old increase is spent, the new one stands.
        assert_eq!(standing(Some(&inc(1000)), Some(inc(1050)), Some(1000)), Some(inc(1050)));
    }

    fn arb_kind() -> impl Strategy<Value = PatternKind> {
        prop::sample::select(PATTERNS.to_vec())
    }

    proptest! {
        #[test]
        fn suggestions_move_the_limit_the_way_they_say(
            kind in arb_kind(),
            mean in 0.0f64..1e9,
            p95_over in 1.0f64..3.0,
            peak_over in 1.0f64..4.0,
            slope in -1e5f64..1e5,
            hard in 1u64..4_000_000_000,
            unit in prop::sample::select(vec![Resource::Memory, Resource::Cpu, Resource::Processes]),
        ) {
            let p95 = mean * p95_over;
            let peak = p95 * peak_over;
            let p = pattern(kind, mean, p95, peak, slope);
            let single = recommend(&p, hard / 2, hard, "g", &[], 600.0, None);
            let agent = recommend_agent("g", &[ResourceAnalysis { resource: unit, pattern: p.clone(), hard, forecast: None }], &[], 600.0);
            for r in single.iter().chain(agent.resources.iter().map(|(_, r)| r)) {
                match r.kind {
                    RecommendationKind::IncreaseQuota => prop_assert!(r.suggested_hard.unwrap() > hard, "{:?} for hard {}", r, hard),
                    RecommendationKind::DecreaseQuota => {
                        let s = r.suggested_hard.unwrap();
                        prop_assert!(s < hard, "{:?} for hard {}", r, hard);
                        if kind == PatternKind::Periodic {
                            prop_assert!(s as f64 >= peak, "{:?} under the peak {}", r, peak);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
