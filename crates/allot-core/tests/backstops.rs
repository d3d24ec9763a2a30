//! Kernel backstop values: property tests over arbitrary valid quotas and
//! groups.

#![allow(clippy::unwrap_used)]

use allot_core::backstops::{self, GROUP_RESOURCES};
use allot_core::group::{QuotaGroup, ScalingPolicy};
use allot_core::limits::ACTIONS;
use allot_core::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A valid limit: 0 <= soft <= hard <= burst, hard > 0.
fn limit() -> impl Strategy<Value = Limit> {
    (1u64..=u64::MAX, 0u64..=100, 0u64..=100, prop::sample::select(ACTIONS.to_vec()), any::<bool>()).prop_map(
        |(hard, soft_pct, burst_extra, action, burst)| {
            let soft = (u128::from(hard) * u128::from(soft_pct) / 100) as u64;
            let burst =
                if burst { hard.saturating_add((hard / 100).saturating_mul(burst_extra).saturating_add(burst_extra)) } else { hard };
            Limit { burst, ..Limit::new(soft, hard, action) }
        },
    )
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![prop::sample::select(allot_core::resource::BUILTIN.to_vec()), Just(Resource::Custom("tokens".into())),]
}

fn limits() -> impl Strategy<Value = BTreeMap<Resource, Limit>> {
    prop::collection::btree_map(resource(), limit(), 0..6)
}

fn quota() -> impl Strategy<Value = Quota> {
    (1i64..=10, limits()).prop_map(|(p, limits)| Quota {
        agent: AgentId::new("a").unwrap(),
        group: "g".into(),
        priority: Priority::new(p).unwrap(),
        limits,
        custom_handler: None,
    })
}

fn group() -> impl Strategy<Value = QuotaGroup> {
    (limits(), prop::collection::btree_map(resource(), any::<u64>(), 0..6), any::<bool>()).prop_map(|(limits, totals, proportional)| {
        QuotaGroup {
            name: "g".into(),
            description: String::new(),
            limits,
            totals,
            budgets: std::collections::BTreeMap::new(),
            scaling_policy: if proportional { ScalingPolicy::Proportional } else { ScalingPolicy::Fixed },
            custom_handler: None,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn agent_backstops_never_undercut_the_hard_limits(q in quota()) {
        for l in q.limits.values() {
            prop_assert!(l.validate("x").is_ok(), "the generator makes valid limits: {:?}", l);
        }
        let b = backstops::agent(&q);
        prop_assert_eq!(b.cpu_weight, q.priority.cpu_weight());
        let memory = q.limits.get(&Resource::Memory);
        // pids.max counts tasks: the threads limit when there is one, else processes as a task ceiling.
        let processes = q.limits.get(&Resource::Threads).or_else(|| q.limits.get(&Resource::Processes));
        if let Some(max) = b.memory_max {
            let l = memory.unwrap();
            prop_assert!(max >= l.hard && max == l.burst && l.burst > l.hard);
        } else {
            prop_assert!(memory.is_none_or(|l| l.burst == l.hard));
        }
        if let Some(high) = b.memory_high {
            let l = memory.unwrap();
            prop_assert_eq!(high, l.hard);
            prop_assert_eq!(l.action, Action::Throttle);
        } else {
            prop_assert!(memory.is_none_or(|l| l.action != Action::Throttle));
        }
        // pids.max whenever threads or processes are limited: at burst (which is hard when no burst is set).
        match (b.pids_max, processes) {
            (Some(pids), Some(l)) => prop_assert!(pids >= l.hard && pids == l.burst),
            (None, None) => {}
            (pids, l) => prop_assert!(false, "pids.max {:?} for processes {:?}", pids, l),
        }
    }

    #[test]
    fn group_backstops_are_the_effective_totals_of_the_kernel_resources(g in group(), members in 0usize..1000) {
        let t = backstops::group(&g, members);
        let all = g.effective_totals(members);
        for (r, v) in &t {
            prop_assert!(GROUP_RESOURCES.contains(r), "{} is not held by the kernel", r);
            prop_assert_eq!(Some(v), all.get(r));
        }
        for r in GROUP_RESOURCES {
            if r == Resource::Processes && all.contains_key(&Resource::Threads) {
                // One pids.max: a group totalling threads has it from threads.
                prop_assert_eq!(t.get(&r), None);
            } else {
                prop_assert_eq!(t.get(&r), all.get(&r));
            }
        }
    }
}
