//! Who holds a freeze or a throttle on one agent.
//!
//! Several parties can stop or slow an agent at once: the enforcement policy
//! (per resource), an operator, and the host-memory-pressure guard. Each of
//! them is a [`Holder`]. [`Holds`] records every holder's freeze and throttle
//! separately and derives the [`Effective`] kernel settings from all of them,
//! so one holder releasing never lifts another holder's hold. Every mutation
//! returns the [`Change`] of the effective settings, which is exactly what
//! the caller must write to the kernel (nothing when it is a no-op).

use crate::resource::Resource;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A party that can hold a freeze or a throttle on an agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// The enforcement policy, for a violation of this resource.
    Policy(Resource),
    /// An operator (`allot suspend`, the daemon's API).
    Operator,
    /// The host-memory-pressure guard.
    HostPressure,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Policy(r) => write!(f, "policy ({r})"),
            Holder::Operator => f.write_str("operator"),
            Holder::HostPressure => f.write_str("host memory pressure"),
        }
    }
}

impl Holder {
    /// The holder as one token for events, metrics and the store:
    /// `policy:<resource>`, `operator` or `host_pressure`.
    pub fn wire_name(&self) -> String {
        match self {
            Holder::Policy(r) => format!("policy:{r}"),
            Holder::Operator => "operator".to_owned(),
            Holder::HostPressure => "host_pressure".to_owned(),
        }
    }

    /// Parse a [`Holder::wire_name`] back; `None` for anything else.
    pub fn from_wire_name(s: &str) -> Option<Holder> {
        match s {
            "operator" => Some(Holder::Operator),
            "host_pressure" => Some(Holder::HostPressure),
            _ => s.strip_prefix("policy:").and_then(|r| r.parse().ok()).map(Holder::Policy),
        }
    }

    /// Whether this is one of the policy's holders.
    pub fn is_policy(&self) -> bool {
        matches!(self, Holder::Policy(_))
    }
}

/// The limits one holder asks for; `None` leaves that limit to the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// A cpu limit in millicores.
    pub cpu_millicores: Option<u64>,
    /// A memory.high in bytes.
    pub memory_high: Option<u64>,
}

/// The settings in force on the agent: what the kernel should hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effective {
    /// Frozen (some holder holds a freeze).
    pub frozen: bool,
    /// The lowest cpu limit any holder asks for, in millicores.
    pub cpu_millicores: Option<u64>,
    /// The lowest memory.high any holder asks for, in bytes.
    pub memory_high: Option<u64>,
}

/// The effective settings before and after one mutation of [`Holds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The settings before.
    pub before: Effective,
    /// The settings after.
    pub after: Effective,
}

impl Change {
    /// Whether nothing the kernel holds changed.
    pub fn is_noop(&self) -> bool {
        self.before == self.after
    }

    /// `Some(true)`: freeze now; `Some(false)`: thaw now; `None`: unchanged.
    pub fn freeze(&self) -> Option<bool> {
        (self.before.frozen != self.after.frozen).then_some(self.after.frozen)
    }

    /// `Some(new value)` when the effective cpu limit changed (`Some(None)` = clear it).
    pub fn cpu(&self) -> Option<Option<u64>> {
        (self.before.cpu_millicores != self.after.cpu_millicores).then_some(self.after.cpu_millicores)
    }

    /// `Some(new value)` when the effective memory.high changed (`Some(None)` = clear it).
    pub fn memory_high(&self) -> Option<Option<u64>> {
        (self.before.memory_high != self.after.memory_high).then_some(self.after.memory_high)
    }
}

/// Every holder's freeze and throttle on one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    freeze: BTreeSet<Holder>,
    throttle: BTreeMap<Holder, Throttle>,
}

/// The lowest of the `Some` values, `None` when there is none.
fn min_some(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.flatten().min()
}

impl Holds {
    /// No holds at all.
    pub fn new() -> Self {
        Holds::default()
    }

    /// The settings in force: frozen iff any holder holds a freeze; each limit
    /// the minimum of the holders' `Some` values.
    pub fn effective(&self) -> Effective {
        Effective {
            frozen: !self.freeze.is_empty(),
            cpu_millicores: min_some(self.throttle.values().map(|t| t.cpu_millicores)),
            memory_high: min_some(self.throttle.values().map(|t| t.memory_high)),
        }
    }

    fn change(&mut self, f: impl FnOnce(&mut Self)) -> Change {
        let before = self.effective();
        f(self);
        Change { before, after: self.effective() }
    }

    /// `by` holds a freeze (again: holding twice is holding once).
    pub fn freeze(&mut self, by: Holder) -> Change {
        self.change(|h| {
            h.freeze.insert(by);
        })
    }

    /// Release `by`'s freeze only; the agent stays frozen while others hold one.
    pub fn thaw(&mut self, by: &Holder) -> Change {
        self.change(|h| {
            h.freeze.remove(by);
        })
    }

    /// `by` holds the throttle `t`, replacing its earlier one.
    pub fn throttle(&mut self, by: Holder, t: Throttle) -> Change {
        self.change(|h| {
            h.throttle.insert(by, t);
        })
    }

    /// Release `by`'s throttle only.
    pub fn release_throttle(&mut self, by: &Holder) -> Change {
        self.change(|h| {
            h.throttle.remove(by);
        })
    }

    /// Release both `by`'s freeze and its throttle.
    pub fn release(&mut self, by: &Holder) -> Change {
        self.change(|h| {
            h.freeze.remove(by);
            h.throttle.remove(by);
        })
    }

    /// Release every [`Holder::Policy`] freeze and throttle (an operator's
    /// forced resume); the operator's and the host guard's holds stay.
    pub fn release_policy(&mut self) -> Change {
        self.change(|h| {
            h.freeze.retain(|x| !x.is_policy());
            h.throttle.retain(|x, _| !x.is_policy());
        })
    }

    /// Release everything (the agent exited or was removed).
    pub fn clear(&mut self) -> Change {
        self.change(|h| {
            h.freeze.clear();
            h.throttle.clear();
        })
    }

    /// Whether some holder holds a freeze.
    pub fn is_frozen(&self) -> bool {
        !self.freeze.is_empty()
    }

    /// Whether some holder holds a throttle (even one that sets no limit).
    pub fn is_throttled(&self) -> bool {
        !self.throttle.is_empty()
    }

    /// The holders of a freeze, in order.
    pub fn freeze_holders(&self) -> Vec<Holder> {
        self.freeze.iter().cloned().collect()
    }

    /// The holders of a throttle, in order.
    pub fn throttle_holders(&self) -> Vec<Holder> {
        self.throttle.keys().cloned().collect()
    }

    /// Whether `h` holds a freeze.
    pub fn holds_freeze(&self, h: &Holder) -> bool {
        self.freeze.contains(h)
    }

    /// Whether `h` holds a throttle.
    pub fn holds_throttle(&self, h: &Holder) -> bool {
        self.throttle.contains_key(h)
    }

    /// The throttle `h` holds, if any.
    pub fn throttle_of(&self, h: &Holder) -> Option<Throttle> {
        self.throttle.get(h).copied()
    }

    /// Whether nobody holds anything.
    pub fn is_empty(&self) -> bool {
        self.freeze.is_empty() && self.throttle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(r: Resource) -> Holder {
        Holder::Policy(r)
    }

    #[test]
    fn names_for_people_and_for_the_wire() {
        assert_eq!(policy(Resource::Memory).to_string(), "policy (memory)");
        assert_eq!(Holder::Operator.to_string(), "operator");
        assert_eq!(Holder::HostPressure.to_string(), "host memory pressure");
        assert_eq!(policy(Resource::Memory).wire_name(), "policy:memory");
        assert_eq!(Holder::Operator.wire_name(), "operator");
        assert_eq!(Holder::HostPressure.wire_name(), "host_pressure");
        for h in [policy(Resource::Cpu), policy(Resource::Custom("tokens".into())), Holder::Operator, Holder::HostPressure] {
            assert_eq!(Holder::from_wire_name(&h.wire_name()), Some(h));
        }
        assert_eq!(Holder::from_wire_name("policy:"), None);
        assert_eq!(Holder::from_wire_name("nobody"), None);
    }

    #[test]
    fn serde_shape_is_snake_case() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_string(&policy(Resource::DiskIo))?, r#"{"policy":"disk_io"}"#);
        assert_eq!(serde_json::to_string(&Holder::HostPressure)?, r#""host_pressure""#);
        assert_eq!(serde_json::from_str::<Holder>(r#""operator""#)?, Holder::Operator);
        Ok(())
    }

    #[test]
    fn one_holder_releasing_does_not_thaw_another() {
        let mut h = Holds::new();
        let p = policy(Resource::Memory);
        assert_eq!(h.freeze(p.clone()).freeze(), Some(true));
        let c = h.freeze(Holder::Operator);
        assert!(c.is_noop());
        let c = h.thaw(&Holder::Operator);
        assert_eq!(c.freeze(), None, "the policy still holds its freeze");
        assert!(h.is_frozen());
        assert!(h.freeze(Holder::Operator).is_noop());
        assert_eq!(h.thaw(&Holder::Operator).freeze(), None);
        assert!(h.is_frozen());
        assert_eq!(h.freeze_holders(), std::slice::from_ref(&p));
        assert_eq!(h.thaw(&p).freeze(), Some(false));
        assert!(h.is_empty());
    }

    #[test]
    fn a_policy_throttle_release_while_frozen_never_thaws() {
        let mut h = Holds::new();
        let p = policy(Resource::Cpu);
        h.freeze(Holder::Operator);
        h.throttle(p.clone(), Throttle { cpu_millicores: Some(250), memory_high: None });
        let c = h.release_throttle(&p);
        assert_eq!(c.freeze(), None);
        assert_eq!(c.cpu(), Some(None));
        assert!(h.is_frozen());
        h.freeze(p.clone());
        h.throttle(p.clone(), Throttle { cpu_millicores: Some(250), memory_high: None });
        let c = h.release(&p);
        assert_eq!(c.freeze(), None, "the operator still holds its freeze");
        assert!(h.holds_freeze(&Holder::Operator) && !h.holds_freeze(&p));
    }

    #[test]
    fn limits_are_the_minimum_of_the_holders() {
        let mut h = Holds::new();
        let pc = policy(Resource::Cpu);
        let pm = policy(Resource::Memory);
        let c = h.throttle(pc.clone(), Throttle { cpu_millicores: Some(500), memory_high: None });
        assert_eq!((c.cpu(), c.memory_high()), (Some(Some(500)), None));
        let c = h.throttle(pm.clone(), Throttle { cpu_millicores: Some(800), memory_high: Some(1 << 30) });
        assert_eq!((c.cpu(), c.memory_high()), (None, Some(Some(1 << 30))));
        let c = h.throttle(Holder::Operator, Throttle { cpu_millicores: Some(100), memory_high: None });
        assert_eq!(c.cpu(), Some(Some(100)));
        let c = h.release_policy();
        assert_eq!((c.cpu(), c.memory_high()), (None, Some(None)));
        assert_eq!(h.throttle_holders(), [Holder::Operator]);
        assert_eq!(h.throttle_of(&Holder::Operator).and_then(|t| t.cpu_millicores), Some(100));
        assert!(h.holds_throttle(&Holder::Operator) && h.is_throttled() && !h.is_frozen());
        let c = h.throttle(Holder::Operator, Throttle::default());
        assert_eq!(c.cpu(), Some(None), "replacing a throttle replaces its limits");
        assert!(h.is_throttled(), "an empty throttle is still held");
        assert_eq!(h.clear().after, Effective::default());
    }

    #[test]
    fn release_policy_keeps_the_operator_and_host_guard() {
        let mut h = Holds::new();
        h.freeze(policy(Resource::Memory));
        h.freeze(Holder::HostPressure);
        assert_eq!(h.release_policy().freeze(), None);
        assert_eq!(h.freeze_holders(), [Holder::HostPressure]);
        assert_eq!(h.release(&Holder::HostPressure).freeze(), Some(false));
    }
}
