//! Deadline arithmetic never panics: `Time` plus any duration saturates, and
//! the policy (escalation delays, grace, scale-down deadlines, recovery
//! dwell and stages) runs with any durations and any observation times.

#![allow(clippy::unwrap_used)]

use allot_core::degradation::RecoveryTiming;
use allot_core::limits::LimitOverride;
use allot_core::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Any duration: small, around the 365-day bound of the parser, huge, and the largest there is.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000).prop_map(Duration::from_millis),
        (0u64..=2 * 365 * 86_400).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
    ]
}

/// Any time: near the epoch, now-ish, and near the end of time.
fn time() -> impl Strategy<Value = Time> {
    prop_oneof![0u64..1_000_000, 1_700_000_000_000u64..1_800_000_000_000, (u64::MAX - 1_000_000)..=u64::MAX, any::<u64>()]
        .prop_map(Time::from_millis)
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (duration(), duration(), duration(), duration(), duration(), duration(), duration()).prop_map(
        |(throttle, suspend, terminate, grace, deadline, dwell, stage)| PolicyConfig {
            delays: BTreeMap::from([(Action::Throttle, throttle), (Action::Suspend, suspend), (Action::Terminate, terminate)]),
            terminate_grace: grace,
            scale_down_deadline: deadline,
            recovery: RecoveryTiming { dwell, stage_interval: stage },
            ..PolicyConfig::default()
        },
    )
}

const RESOURCES: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Processes];

proptest! {
    #![proptest_config(ProptestConfig { rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift, ..ProptestConfig::with_cases(100_000) })]

    #[test]
    fn time_plus_any_duration_never_panics_and_saturates(t in time(), d in duration()) {
        let later = t.plus(d);
        prop_assert!(later >= t);
        let exact = u128::from(t.as_millis()) + d.as_millis();
        prop_assert_eq!(u128::from(later.as_millis()), exact.min(u128::from(u64::MAX)));
        prop_assert!(later.since(t) <= d);
        prop_assert_eq!(t.since(later), Duration::ZERO);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Escalations with any delays, at any times: no panic, and every due time is at or after the decision that set it.
    #[test]
    fn the_policy_never_panics_with_any_durations(
        cfg in config(),
        actions in [prop::sample::select(limits::ACTIONS.to_vec()), prop::sample::select(limits::ACTIONS.to_vec()), prop::sample::select(limits::ACTIONS.to_vec())],
        start in time(),
        steps in prop::collection::vec((0usize..3, prop_oneof![0u64..60, 60u64..130, 130u64..300], prop_oneof![0u64..5_000, any::<u64>()]), 1..40),
    ) {
        let id = AgentId::new("a1").unwrap();
        let mut ledger = Ledger::default();
        let mut spec = AgentSpec::new(id.clone(), "standard_agent");
        spec.overrides = RESOURCES
            .iter()
            .zip(actions)
            .map(|(r, a)| (r.clone(), LimitOverride { soft: Some(500), hard: Some(1000), burst: Some(1500), action: Some(a), ..Default::default() }))
            .collect();
        spec.custom_handler = Some(group::CustomHandler::Command(vec!["true".into()]));
        ledger.register(spec).unwrap();
        let mut policy = Policy::new(cfg);
        let mut now = start;
        for (r, pct, dt) in steps {
            now = now.plus(Duration::from_millis(dt));
            policy.advance(now);
            let a = ledger.record(&id, RESOURCES[r].clone(), pct * 10, now).unwrap();
            for d in policy.observe(&a) {
                if let DecisionKind::Scheduled { due, .. } = d.kind {
                    prop_assert!(due >= now, "{due} before {now}");
                }
            }
            if let Some(next) = policy.next_due() {
                policy.advance(next);
            }
        }
        policy.advance(Time::from_millis(u64::MAX));
    }
}
