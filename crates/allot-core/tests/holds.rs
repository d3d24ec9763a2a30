//! Holders of freezes and throttles: random sequences of operations by random
//! holders against a naive model, and a model of the kernel that only ever
//! sees the returned changes.

#![allow(clippy::unwrap_used)]

use allot_core::Resource;
use allot_core::holds::{Change, Effective, Holder, Holds, Throttle};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
enum Op {
    Freeze(Holder),
    Thaw(Holder),
    Throttle(Holder, Throttle),
    ReleaseThrottle(Holder),
    Release(Holder),
    ReleasePolicy,
}

impl Op {
    /// The holder whose hold this operation releases, if it releases one.
    fn releases(&self) -> Option<&Holder> {
        match self {
            Op::Thaw(h) | Op::ReleaseThrottle(h) | Op::Release(h) => Some(h),
            _ => None,
        }
    }
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        Just(Holder::Policy(Resource::Memory)),
        Just(Holder::Policy(Resource::Cpu)),
        Just(Holder::Policy(Resource::Processes)),
        Just(Holder::Operator),
        Just(Holder::HostPressure),
    ]
}

fn throttle() -> impl Strategy<Value = Throttle> {
    // Small ranges so that equal limits from different holders occur.
    (prop::option::of(1u64..8), prop::option::of(1u64..8)).prop_map(|(c, m)| Throttle { cpu_millicores: c, memory_high: m })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => holder().prop_map(Op::Freeze),
        3 => holder().prop_map(Op::Thaw),
        3 => (holder(), throttle()).prop_map(|(h, t)| Op::Throttle(h, t)),
        2 => holder().prop_map(Op::ReleaseThrottle),
        2 => holder().prop_map(Op::Release),
        1 => Just(Op::ReleasePolicy),
    ]
}

/// The obvious implementation, to compare against.
#[derive(Default)]
struct Model {
    freeze: BTreeSet<Holder>,
    throttle: BTreeMap<Holder, Throttle>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Freeze(h) => {
                self.freeze.insert(h.clone());
            }
            Op::Thaw(h) => {
                self.freeze.remove(h);
            }
            Op::Throttle(h, t) => {
                self.throttle.insert(h.clone(), *t);
            }
            Op::ReleaseThrottle(h) => {
                self.throttle.remove(h);
            }
            Op::Release(h) => {
                self.freeze.remove(h);
                self.throttle.remove(h);
            }
            Op::ReleasePolicy => {
                self.freeze.retain(|h| !matches!(h, Holder::Policy(_)));
                self.throttle.retain(|h, _| !matches!(h, Holder::Policy(_)));
            }
        }
    }

    fn effective(&self) -> Effective {
        let mut cpu = None;
        let mut mem = None;
        for t in self.throttle.values() {
            if let Some(c) = t.cpu_millicores {
                cpu = Some(cpu.map_or(c, |x: u64| x.min(c)));
            }
            if let Some(m) = t.memory_high {
                mem = Some(mem.map_or(m, |x: u64| x.min(m)));
            }
        }
        Effective { frozen: !self.freeze.is_empty(), cpu_millicores: cpu, memory_high: mem }
    }
}

/// What the kernel holds, changed only through the returned changes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kernel {
    frozen: bool,
    cpu: Option<u64>,
    memory_high: Option<u64>,
}

impl Kernel {
    fn apply(&mut self, c: &Change) {
        if let Some(f) = c.freeze() {
            self.frozen = f;
        }
        if let Some(v) = c.cpu() {
            self.cpu = v;
        }
        if let Some(v) = c.memory_high() {
            self.memory_high = v;
        }
    }

    fn matches(&self, e: &Effective) -> bool {
        self.frozen == e.frozen && self.cpu == e.cpu_millicores && self.memory_high == e.memory_high
    }
}

fn apply(h: &mut Holds, op: &Op) -> Change {
    match op {
        Op::Freeze(by) => h.freeze(by.clone()),
        Op::Thaw(by) => h.thaw(by),
        Op::Throttle(by, t) => h.throttle(by.clone(), *t),
        Op::ReleaseThrottle(by) => h.release_throttle(by),
        Op::Release(by) => h.release(by),
        Op::ReleasePolicy => h.release_policy(),
    }
}

#[test]
fn policy_and_operator_freezes_scenario() {
    let mut h = Holds::default();
    let policy = Holder::Policy(Resource::Memory);
    assert_eq!(h.freeze(policy.clone()).freeze(), Some(true));
    assert_eq!(h.freeze(Holder::Operator).freeze(), None);
    let c = h.thaw(&Holder::Operator);
    assert_eq!(c.freeze(), None, "operator thaw: the policy's freeze stays");
    assert!(c.is_noop() && h.is_frozen());
    assert!(h.freeze(Holder::Operator).is_noop());
    assert_eq!(h.thaw(&Holder::Operator).freeze(), None);
    assert!(h.is_frozen());
    assert_eq!(h.thaw(&policy).freeze(), Some(false));
    assert!(!h.is_frozen() && h.is_empty());
}

#[test]
fn a_policy_throttle_release_while_frozen_never_thaws() {
    for freezer in [Holder::Policy(Resource::Memory), Holder::Policy(Resource::Cpu), Holder::Operator, Holder::HostPressure] {
        let mut h = Holds::default();
        let p = Holder::Policy(Resource::Cpu);
        h.freeze(freezer.clone());
        h.throttle(p.clone(), Throttle { cpu_millicores: Some(100), memory_high: Some(1 << 20) });
        let c = h.release_throttle(&p);
        assert_eq!(c.freeze(), None, "frozen by {freezer}");
        assert!(h.is_frozen());
        assert_eq!((c.cpu(), c.memory_high()), (Some(None), Some(None)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn effective_follows_the_holders_and_the_kernel_follows_the_changes(ops in prop::collection::vec(op(), 0..60)) {
        let mut h = Holds::default();
        let mut model = Model::default();
        let mut kernel = Kernel::default();
        for op in &ops {
            let before = h.effective();
            let c = apply(&mut h, op);
            model.apply(op);
            let e = h.effective();
            prop_assert_eq!(c.before, before);
            prop_assert_eq!(c.after, e);
            prop_assert_eq!(e, model.effective(), "after {:?}", op);
            prop_assert_eq!(e.frozen, !h.freeze_holders().is_empty());
            prop_assert_eq!(h.is_frozen(), !model.freeze.is_empty());
            prop_assert_eq!(h.freeze_holders(), model.freeze.iter().cloned().collect::<Vec<_>>());
            prop_assert_eq!(h.throttle_holders(), model.throttle.keys().cloned().collect::<Vec<_>>());
            prop_assert_eq!(h.is_throttled(), !model.throttle.is_empty());
            prop_assert_eq!(h.is_empty(), model.freeze.is_empty() && model.throttle.is_empty());
            prop_assert_eq!(c.is_noop(), c.before == c.after);
            prop_assert_eq!(c.is_noop(), c.freeze().is_none() && c.cpu().is_none() && c.memory_high().is_none());
            kernel.apply(&c);
            prop_assert!(kernel.matches(&e), "kernel {:?} but effective {:?} after {:?}", kernel, e, op);
        }
    }

    #[test]
    fn one_holder_releasing_never_lifts_another_holders_hold(ops in prop::collection::vec(op(), 0..60)) {
        let mut h = Holds::default();
        for op in &ops {
            let c = apply(&mut h, op);
            let Some(by) = op.releases() else { continue };
            let others_freeze = h.freeze_holders().iter().any(|x| x != by);
            if others_freeze {
                prop_assert_ne!(c.freeze(), Some(false), "{:?} thawed while another holder holds a freeze", op);
                prop_assert!(h.is_frozen());
            }
            for other in h.throttle_holders().into_iter().filter(|x| x != by) {
                let t = h.throttle_of(&other).unwrap();
                if let Some(cpu) = t.cpu_millicores {
                    prop_assert!(c.after.cpu_millicores.is_some_and(|v| v <= cpu), "{:?} lifted {}'s cpu limit", op, other);
                    prop_assert_ne!(c.cpu(), Some(None));
                }
                if let Some(m) = t.memory_high {
                    prop_assert!(c.after.memory_high.is_some_and(|v| v <= m), "{:?} lifted {}'s memory.high", op, other);
                    prop_assert_ne!(c.memory_high(), Some(None));
                }
            }
        }
    }

    #[test]
    fn limits_are_the_minimum_of_the_holders(ops in prop::collection::vec(op(), 0..60)) {
        let mut h = Holds::default();
        for op in &ops {
            apply(&mut h, op);
            let throttles: Vec<Throttle> = h.throttle_holders().iter().map(|x| h.throttle_of(x).unwrap()).collect();
            let e = h.effective();
            prop_assert_eq!(e.cpu_millicores, throttles.iter().filter_map(|t| t.cpu_millicores).min());
            prop_assert_eq!(e.memory_high, throttles.iter().filter_map(|t| t.memory_high).min());
        }
    }

    #[test]
    fn release_policy_leaves_no_policy_holder_and_keeps_the_others(ops in prop::collection::vec(op(), 0..40)) {
        let mut h = Holds::default();
        for op in &ops {
            apply(&mut h, op);
        }
        let keep_freeze: Vec<Holder> = h.freeze_holders().into_iter().filter(|x| !x.is_policy()).collect();
        let keep_throttle: Vec<Holder> = h.throttle_holders().into_iter().filter(|x| !x.is_policy()).collect();
        h.release_policy();
        prop_assert_eq!(h.freeze_holders(), keep_freeze);
        prop_assert_eq!(h.throttle_holders(), keep_throttle);
    }
}
