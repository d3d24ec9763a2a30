//! Host-memory-pressure victim choice: property tests over arbitrary hosts,
//! candidates and suspension lists, including extreme u64 values.

#![allow(clippy::unwrap_used)]

use allot_core::AgentId;
use allot_core::pressure::{Candidate, HostMemory, PressureStep, release_above, reserve, step};
use proptest::prelude::*;

fn agent_id() -> impl Strategy<Value = AgentId> {
    // A few names, so candidates and held agents overlap.
    (0u8..8).prop_map(|i| AgentId::new(format!("agent{i}")).unwrap())
}

/// Any u64, with the edges and small values more likely than uniform.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), Just(u64::MAX - 1), 0u64..1000, any::<u64>()]
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (agent_id(), 1u8..=10, amount(), amount()).prop_map(|(agent, priority, memory, soft)| Candidate { agent, priority, memory, soft })
}

fn host() -> impl Strategy<Value = HostMemory> {
    prop_oneof![
        (amount(), amount()).prop_map(|(total, available)| HostMemory { total, available }),
        // Around the thresholds.
        (1u64..1_000_000, 0u64..100).prop_map(|(total, pct)| HostMemory { total, available: total / 100 * pct }),
    ]
}

fn held() -> impl Strategy<Value = Vec<AgentId>> {
    prop::collection::vec(agent_id(), 0..5)
}

/// The key eviction order minimises: priority, then the largest excess, then id.
fn key(c: &Candidate) -> (u8, std::cmp::Reverse<u64>, AgentId) {
    (c.priority, std::cmp::Reverse(c.memory.saturating_sub(c.soft)), c.agent.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn suspends_only_under_the_reserve_and_releases_only_above_the_hysteresis(
        mem in host(), cs in prop::collection::vec(candidate(), 0..6), held in held()
    ) {
        let r = reserve(mem.total);
        prop_assert_eq!(r, mem.total / 4);
        match step(mem, &cs, &held) {
            PressureStep::Suspend { available, reserve, .. } => {
                prop_assert!(mem.available < r);
                prop_assert_eq!((available, reserve), (mem.available, r));
            }
            PressureStep::Release { available, reserve, .. } => {
                prop_assert!(u128::from(mem.available) > u128::from(r) + u128::from(r / 5));
                prop_assert_eq!((available, reserve), (mem.available, r));
            }
            PressureStep::Nothing => {
                let suspendable = cs.iter().any(|c| !held.contains(&c.agent));
                prop_assert!(mem.available >= r || !suspendable, "under the reserve with candidates left");
                prop_assert!(mem.available <= release_above(mem.total) || held.is_empty(), "memory back but nothing released");
            }
        }
    }

    #[test]
    fn the_victim_is_the_first_unheld_candidate_in_eviction_order(
        mem in host(), cs in prop::collection::vec(candidate(), 0..8), held in held()
    ) {
        if let PressureStep::Suspend { victim, .. } = step(mem, &cs, &held) {
            prop_assert!(cs.iter().any(|c| c.agent == victim), "victim {} is not a candidate", victim);
            prop_assert!(!held.contains(&victim), "victim {} is already held", victim);
            let best = cs.iter().filter(|c| !held.contains(&c.agent)).map(key).min().unwrap();
            prop_assert_eq!(victim, best.2);
        }
    }

    #[test]
    fn release_picks_the_most_recently_suspended(mem in host(), cs in prop::collection::vec(candidate(), 0..4), held in held()) {
        if let PressureStep::Release { agent, .. } = step(mem, &cs, &held) {
            prop_assert_eq!(Some(&agent), held.last());
        }
    }

    #[test]
    fn memory_below_the_reserve_with_candidates_always_suspends(
        total in amount(), cs in prop::collection::vec(candidate(), 1..6)
    ) {
        let r = reserve(total);
        prop_assume!(r > 0);
        let s = step(HostMemory { total, available: r - 1 }, &cs, &[]);
        prop_assert!(matches!(s, PressureStep::Suspend { .. }), "{:?}", s);
    }
}
