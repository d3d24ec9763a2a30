//! Limits on one resource (soft <= hard <= burst) and the enforcement actions.

use crate::quantity::Window;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What allot does when a hard limit is violated (SPEC section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Log and publish an event.
    Warn,
    /// Lower the agent's share of the resource.
    Throttle,
    /// Ask the agent to bring usage under 80 % of the limit before a deadline.
    ScaleDown,
    /// Freeze the whole process tree.
    Suspend,
    /// Restart the agent on another node (suspend until cluster mode exists).
    Migrate,
    /// Notice, grace period, then kill the whole tree.
    Terminate,
    /// Run a configured command or POST to a configured URL.
    #[serde(alias = "custom_handler")]
    Custom,
}

/// All actions, in order of strength.
pub const ACTIONS: [Action; 7] =
    [Action::Warn, Action::Throttle, Action::ScaleDown, Action::Suspend, Action::Migrate, Action::Terminate, Action::Custom];

impl Action {
    /// The action's name as written in files and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Throttle => "throttle",
            Action::ScaleDown => "scale_down",
            Action::Suspend => "suspend",
            Action::Migrate => "migrate",
            Action::Terminate => "terminate",
            Action::Custom => "custom",
        }
    }

    /// Whether the action stops the agent's work more than a throttle does,
    /// so that allot throttles while it waits for it (SPEC section 7).
    pub fn stronger_than_throttle(self) -> bool {
        matches!(self, Action::Suspend | Action::Migrate | Action::Terminate)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An action name that is not one of the seven.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}: expected one of warn, throttle, suspend, terminate, scale_down, migrate, custom")]
pub struct ActionNameError(pub String);

impl FromStr for Action {
    type Err = ActionNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "custom_handler" {
            return Ok(Action::Custom);
        }
        ACTIONS.into_iter().find(|a| a.name() == s).ok_or_else(|| ActionNameError(s.to_owned()))
    }
}

/// The default burst window (SPEC section 4).
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(30);

/// The limit on one resource of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Above this: soft violation (warn, degradation plan).
    pub soft: u64,
    /// Above this: burst violation while at most `burst` and for at most `burst_window`.
    pub hard: u64,
    /// Above this: hard violation at once. Defaults to `hard`.
    pub burst: u64,
    /// How long usage may stay between hard and burst.
    #[serde(with = "millis")]
    pub burst_window: Duration,
    /// The action for a hard violation.
    pub action: Action,
    /// For custom resources: the window the counts are per.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<Window>,
}

/// A limit that breaks one of the rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct LimitError {
    /// The limit's location, such as `groups.standard_agent.limits.memory`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl Limit {
    /// A limit with burst equal to hard and the default burst window.
    pub fn new(soft: u64, hard: u64, action: Action) -> Self {
        Limit { soft, hard, burst: hard, burst_window: DEFAULT_BURST_WINDOW, action, window: None }
    }

    /// Check soft <= hard <= burst and a non-zero hard limit; `field` names
    /// the limit (its last part, when a resource name, gives the unit the
    /// values are written in).
    pub fn validate(&self, field: &str) -> Result<(), LimitError> {
        let err = |problem: String| Err(LimitError { field: field.to_owned(), problem });
        let unit = field.rsplit('.').next().and_then(|r| r.parse::<crate::Resource>().ok()).map(|r| r.unit());
        let show = |v: u64| unit.map_or_else(|| v.to_string(), |u| crate::quantity::format(u, crate::quantity::Quantity::new(v)));
        if self.hard == 0 {
            return err("hard must be greater than 0".into());
        }
        if self.soft > self.hard {
            return err(format!("soft ({}) must not exceed hard ({})", show(self.soft), show(self.hard)));
        }
        if self.hard > self.burst {
            return err(format!("hard ({}) must not exceed burst ({})", show(self.hard), show(self.burst)));
        }
        if self.burst > self.hard && self.burst_window.is_zero() {
            return err("burst_window must be greater than 0 when burst is above hard".into());
        }
        Ok(())
    }
}

/// Per-agent changes to a limit; `None` keeps the group's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverride {
    /// New soft limit.
    pub soft: Option<u64>,
    /// New hard limit.
    pub hard: Option<u64>,
    /// New burst limit.
    pub burst: Option<u64>,
    /// New burst window.
    #[serde(with = "opt_millis", default)]
    pub burst_window: Option<Duration>,
    /// New action.
    pub action: Option<Action>,
    /// New window, for custom resources.
    pub window: Option<Window>,
}

impl LimitOverride {
    /// Merge this override over `base` (the group default, if any) and validate.
    ///
    /// Without a base the override must name `hard`; `soft` and `burst` then
    /// default to `hard` and `action` to warn. With a base, a new `hard` that
    /// lies above the base burst raises burst with it unless burst is given.
    pub fn apply(&self, base: Option<&Limit>, field: &str) -> Result<Limit, LimitError> {
        let limit = self.merge_over(base, field)?;
        limit.validate(field)?;
        Ok(limit)
    }

    /// This override over `self`, field by field: what `newer` gives wins,
    /// what it leaves out stays as `self` has it (a run-time change of one
    /// field keeps the others of earlier changes and of the start).
    pub fn updated_by(&self, newer: &LimitOverride) -> LimitOverride {
        LimitOverride {
            soft: newer.soft.or(self.soft),
            hard: newer.hard.or(self.hard),
            burst: newer.burst.or(self.burst),
            burst_window: newer.burst_window.or(self.burst_window),
            action: newer.action.or(self.action),
            window: newer.window.or(self.window),
        }
    }

    /// The field to blame when `limit` (this override merged over a base)
    /// breaks soft <= hard <= burst: of the two fields out of order, the one
    /// this override gives (the later one when it gives both); `None` when
    /// the order holds.
    pub fn fault(&self, limit: &Limit) -> Option<&'static str> {
        let pick = |low: (&'static str, bool), high: (&'static str, bool)| if high.1 || !low.1 { high.0 } else { low.0 };
        if limit.hard == 0 {
            Some("hard")
        } else if limit.soft > limit.hard {
            Some(pick(("soft", self.soft.is_some()), ("hard", self.hard.is_some())))
        } else if limit.hard > limit.burst {
            Some(pick(("hard", self.hard.is_some()), ("burst", self.burst.is_some())))
        } else if limit.burst > limit.hard && limit.burst_window.is_zero() {
            Some("burst_window")
        } else {
            None
        }
    }

    /// The counts this override gives (written per `window`), as counts per
    /// `to` (rounded up, as [`Window::convert`]); `None` when one exceeds
    /// the internal range. Without a window of its own it is unchanged.
    pub fn in_window(&self, to: Window) -> Option<LimitOverride> {
        let Some(from) = self.window.filter(|w| *w != to) else { return Some(self.clone()) };
        let conv = |v: Option<u64>| v.map(|v| from.convert(v, to)).map_or(Some(None), |c| c.map(Some));
        Some(LimitOverride { soft: conv(self.soft)?, hard: conv(self.hard)?, burst: conv(self.burst)?, window: Some(to), ..self.clone() })
    }

    /// Whether this override gives every count of a limit (soft, hard, and
    /// burst where `burst_apart`, a burst distinct from hard, would otherwise
    /// be kept): such an override may count in another window than the limit
    /// it changes; a partial one may not.
    pub fn restates_counts(&self, burst_apart: bool) -> bool {
        self.soft.is_some() && self.hard.is_some() && (self.burst.is_some() || !burst_apart)
    }

    /// This override over `base`, not validated (see [`LimitOverride::apply`]).
    /// An override counted in another window than the base's must give every
    /// count (the limit then counts in the override's window: a daily budget
    /// stays daily); a partial one is refused, naming what is missing.
    pub fn merge_over(&self, base: Option<&Limit>, field: &str) -> Result<Limit, LimitError> {
        let limit = match base {
            Some(base) => {
                let per = |w: Option<Window>| w.unwrap_or(Window::Minute);
                if let Some(w) = self.window.filter(|w| *w != per(base.window)) {
                    // The base's counts are per another window: none of them can stand for this one.
                    let missing: Vec<&str> = [("soft", self.soft.is_none()), ("hard", self.hard.is_none())]
                        .into_iter()
                        .filter_map(|(f, m)| m.then_some(f))
                        .chain((self.burst.is_none() && base.burst != base.hard).then_some("burst"))
                        .collect();
                    if !missing.is_empty() {
                        return Err(LimitError {
                            field: field.to_owned(),
                            problem: format!(
                                "counts per {w} over a limit counted per {}: give {} per {w} too",
                                per(base.window),
                                missing.join(" and ")
                            ),
                        });
                    }
                }
                let hard = self.hard.unwrap_or(base.hard);
                let base_burst = if base.burst == base.hard { hard } else { base.burst.max(hard) };
                Limit {
                    soft: self.soft.unwrap_or(base.soft.min(hard)),
                    hard,
                    burst: self.burst.unwrap_or(base_burst),
                    burst_window: self.burst_window.unwrap_or(base.burst_window),
                    action: self.action.unwrap_or(base.action),
                    window: self.window.or(base.window),
                }
            }
            None => {
                let Some(hard) = self.hard else {
                    return Err(LimitError {
                        field: field.to_owned(),
                        problem: "the group has no limit for this resource, so hard must be given".into(),
                    });
                };
                Limit {
                    soft: self.soft.unwrap_or(hard),
                    hard,
                    burst: self.burst.unwrap_or(hard),
                    burst_window: self.burst_window.unwrap_or(DEFAULT_BURST_WINDOW),
                    action: self.action.unwrap_or(Action::Warn),
                    window: self.window,
                }
            }
        };
        Ok(limit)
    }
}

pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::time::duration_millis(*d))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&crate::time::duration_millis(*d)),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_soft_hard_burst_is_enforced() {
        assert!(Limit::new(10, 20, Action::Warn).validate("x").is_ok());
        let e = Limit::new(30, 20, Action::Warn).validate("groups.g.limits.memory").unwrap_err();
        assert_eq!(e.to_string(), "groups.g.limits.memory: soft (30) must not exceed hard (20)");
        // Values in the resource's unit, as they are written in a fleet file.
        let e = Limit::new(600 << 20, 500 << 20, Action::Warn).validate("agents.a.limits.memory").unwrap_err();
        assert_eq!(e.to_string(), "agents.a.limits.memory: soft (600Mi) must not exceed hard (500Mi)");
        let e = Limit::new(400, 300, Action::Warn).validate("agents.a.limits.cpu").unwrap_err();
        assert_eq!(e.to_string(), "agents.a.limits.cpu: soft (400m) must not exceed hard (300m)");
        let mut l = Limit::new(10, 20, Action::Warn);
        l.burst = 15;
        assert!(l.validate("x").unwrap_err().problem.contains("must not exceed burst"));
        assert!(Limit::new(0, 0, Action::Warn).validate("x").unwrap_err().problem.contains("greater than 0"));
        l.burst = 40;
        l.burst_window = Duration::ZERO;
        assert!(l.validate("x").unwrap_err().problem.contains("burst_window"));
    }

    #[test]
    fn an_override_in_another_window_gives_every_count_it_would_otherwise_take_from_the_base() {
        // A group's 10k/min soft was kept under an agent's hard of 100k/day: read per day.
        let mut base = Limit::new(10_000, 20_000, Action::Throttle);
        base.window = Some(Window::Minute);
        let o = LimitOverride { hard: Some(100_000), window: Some(Window::Day), ..Default::default() };
        let e = o.apply(Some(&base), "agents.a.limits.tokens").unwrap_err();
        assert_eq!(e.to_string(), "agents.a.limits.tokens: counts per day over a limit counted per min: give soft per day too");
        let o = LimitOverride { soft: Some(80_000), hard: Some(100_000), window: Some(Window::Day), ..Default::default() };
        let l = o.apply(Some(&base), "x").unwrap();
        assert_eq!((l.soft, l.hard, l.burst, l.window), (80_000, 100_000, 100_000, Some(Window::Day)));
        // The same window, or none given: the base's counts stand.
        let o = LimitOverride { hard: Some(30_000), window: Some(Window::Minute), ..Default::default() };
        assert_eq!(o.apply(Some(&base), "x").unwrap().soft, 10_000);
        base.burst = 40_000;
        let o = LimitOverride { soft: Some(1), hard: Some(2), window: Some(Window::Hour), ..Default::default() };
        assert!(o.apply(Some(&base), "x").unwrap_err().problem.ends_with("give burst per h too"));
    }

    #[test]
    fn overrides_merge_over_the_group_default() {
        let base = Limit::new(200, 500, Action::Throttle);
        let o = LimitOverride { hard: Some(300), ..Default::default() };
        let l = o.apply(Some(&base), "x").unwrap();
        assert_eq!((l.soft, l.hard, l.burst, l.action), (200, 300, 300, Action::Throttle));
        let o = LimitOverride { hard: Some(100), ..Default::default() };
        assert_eq!(o.apply(Some(&base), "x").unwrap().soft, 100, "soft follows a hard below it");
        let o = LimitOverride { soft: Some(600), ..Default::default() };
        assert!(o.apply(Some(&base), "agents[0].limits.memory").unwrap_err().to_string().starts_with("agents[0].limits.memory: soft"));
    }

    #[test]
    fn a_partial_change_is_counted_in_the_window_the_limit_has() {
        // 5M/day is 3473/min (rounded up), not 5M/min.
        let o = LimitOverride { hard: Some(5_000_000), window: Some(Window::Day), ..Default::default() };
        assert_eq!(o.in_window(Window::Minute).unwrap().hard, Some(3473));
        let o = LimitOverride { soft: Some(u64::MAX), window: Some(Window::Day), ..Default::default() };
        assert_eq!(o.in_window(Window::Minute).unwrap().soft, Some(u64::MAX.div_ceil(1440)));
        let o = LimitOverride { soft: Some(u64::MAX), window: Some(Window::Second), ..Default::default() };
        assert!(o.in_window(Window::Minute).is_none(), "too large per minute");
    }

    #[test]
    fn run_time_changes_merge_field_by_field_and_the_changed_field_is_blamed() {
        let base = Limit::new(50, 100, Action::Warn);
        let first = LimitOverride { hard: Some(120), ..Default::default() };
        let second = LimitOverride { soft: Some(60), ..Default::default() };
        let merged = first.updated_by(&second);
        assert_eq!((merged.soft, merged.hard), (Some(60), Some(120)), "the earlier hard is kept");
        let l = merged.apply(Some(&base), "x").unwrap();
        assert_eq!((l.soft, l.hard, l.burst), (60, 120, 120));
        // soft above hard: the field the change gave is named.
        let bad = LimitOverride { soft: Some(200), ..Default::default() };
        let l = merged.updated_by(&bad).merge_over(Some(&base), "x").unwrap();
        assert_eq!(bad.fault(&l), Some("soft"));
        let lower = LimitOverride { hard: Some(40), burst: Some(40), ..Default::default() };
        let l = LimitOverride { soft: Some(60), ..Default::default() }.updated_by(&lower).merge_over(Some(&base), "x").unwrap();
        assert_eq!(lower.fault(&l), Some("hard"));
        let burst = LimitOverride { burst: Some(90), ..Default::default() };
        let l = burst.merge_over(Some(&base), "x").unwrap();
        assert_eq!(burst.fault(&l), Some("burst"));
        assert_eq!(second.fault(&second.apply(Some(&base), "x").unwrap()), None);
    }

    #[test]
    fn an_override_without_a_group_limit_needs_hard() {
        let e = LimitOverride { soft: Some(5), ..Default::default() }.apply(None, "agents[1].limits.files").unwrap_err();
        assert!(e.problem.contains("hard must be given"));
        let l = LimitOverride { hard: Some(100), ..Default::default() }.apply(None, "x").unwrap();
        assert_eq!((l.soft, l.hard, l.burst, l.action), (100, 100, 100, Action::Warn));
    }

    #[test]
    fn action_names_parse_including_the_sketch_alias() {
        for a in ACTIONS {
            assert_eq!(a.name().parse::<Action>().unwrap(), a);
        }
        assert_eq!("custom_handler".parse::<Action>().unwrap(), Action::Custom);
        assert!("explode".parse::<Action>().unwrap_err().to_string().contains("expected one of warn"));
    }
}
