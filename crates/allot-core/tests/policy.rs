//! The enforcement policy end to end through the ledger: one test per rule of
//! SPEC sections 7 and 8, and property tests for its invariants.

#![allow(clippy::unwrap_used)]

use allot_core::degradation::{DegradationEvent, Level, RecoveryTiming};
use allot_core::limits::LimitOverride;
use allot_core::policy::{Hold, throttle_factor};
use allot_core::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

struct Rig {
    ledger: Ledger,
    policy: Policy,
}

fn agent() -> AgentId {
    AgentId::new("a1").unwrap()
}

impl Rig {
    fn new(group: &str, overrides: &[(Resource, LimitOverride)], config: PolicyConfig) -> Self {
        let mut ledger = Ledger::default();
        let mut spec = AgentSpec::new(agent(), group);
        spec.overrides = overrides.iter().cloned().collect();
        spec.custom_handler = Some(group::CustomHandler::Command(vec!["true".into()]));
        ledger.register(spec).unwrap();
        Rig { ledger, policy: Policy::new(config) }
    }

    fn standard(config: PolicyConfig) -> Self {
        Rig::new("standard_agent", &[], config)
    }

    fn obs(&mut self, r: Resource, value: u64, secs: u64) -> Vec<Decision> {
        let a = self.ledger.record(&agent(), r, value, Time::from_secs(secs)).unwrap();
        self.policy.observe(&a)
    }

    fn advance(&mut self, secs: u64) -> Vec<Decision> {
        self.policy.advance(Time::from_secs(secs))
    }
}

fn names(ds: &[Decision]) -> Vec<&'static str> {
    ds.iter()
        .map(|d| match &d.kind {
            DecisionKind::Degradation { event: DegradationEvent::Plan { .. } } => "plan",
            DecisionKind::Degradation { event: DegradationEvent::Recovery { .. } } => "recovery",
            DecisionKind::Degradation { event: DegradationEvent::Rollback { .. } } => "rollback",
            k => k.action_name().unwrap(),
        })
        .collect()
}

fn with_action(r: Resource, action: Action) -> (Resource, LimitOverride) {
    (r, LimitOverride { action: Some(action), ..Default::default() })
}

#[test]
fn soft_violation_warns_once_and_plans_minimal_degradation() {
    let mut rig = Rig::standard(PolicyConfig::default());
    assert!(rig.obs(Resource::Cpu, 100, 0).is_empty());
    let ds = rig.obs(Resource::Cpu, 200, 1);
    assert_eq!(names(&ds), ["warn", "plan"]);
    let DecisionKind::Warn { violation } = &ds[0].kind else { panic!() };
    assert_eq!((violation.kind, violation.limit), (ViolationKind::Soft, 150));
    let DecisionKind::Degradation { event: DegradationEvent::Plan { plan } } = &ds[1].kind else { panic!() };
    assert_eq!(plan.level, Level::Minimal);
    assert!(rig.obs(Resource::Cpu, 210, 2).is_empty(), "no repeat while the violation lasts");
}

#[test]
fn hard_violation_warns_at_once_and_throttles_after_the_escalation_delay() {
    let mut rig = Rig::standard(PolicyConfig::default());
    let ds = rig.obs(Resource::Cpu, 400, 10);
    assert_eq!(names(&ds), ["warn", "scheduled", "plan"]);
    assert_eq!(ds[1].kind, DecisionKind::Scheduled { action: Action::Throttle, due: Time::from_secs(40) });
    assert!(rig.obs(Resource::Cpu, 400, 39).is_empty());
    assert_eq!(rig.policy.next_due(), Some(Time::from_secs(40)));
    let ds = rig.advance(40);
    assert_eq!(names(&ds), ["throttle"]);
    assert_eq!(ds[0].at, Time::from_secs(40));
    let DecisionKind::Throttle { factor, interim, .. } = ds[0].kind else { panic!() };
    assert_eq!((factor, interim), (0.85, false), "400 over 300 is an excess of 0.33");
    // A deeper excess tightens the throttle; a milder one does not loosen it.
    let ds = rig.obs(Resource::Cpu, 700, 41);
    assert!(matches!(ds[0].kind, DecisionKind::Throttle { factor: 0.5, .. }), "{ds:?}");
    assert!(names(&rig.obs(Resource::Cpu, 350, 42)).is_empty());
}

#[test]
fn a_violation_that_clears_before_the_delay_cancels_the_action() {
    let mut rig = Rig::standard(PolicyConfig::default());
    rig.obs(Resource::Cpu, 400, 0);
    let ds = rig.obs(Resource::Cpu, 250, 20);
    assert_eq!(names(&ds), ["cancelled"]);
    assert_eq!(ds[0].kind, DecisionKind::CancelPending { action: Action::Throttle, usage: 250 });
    assert!(rig.advance(100).iter().all(|d| !matches!(d.kind, DecisionKind::Throttle { .. })));
    assert_eq!(rig.policy.next_due(), None);
}

#[test]
fn suspend_waits_its_delay_throttling_meanwhile() {
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    let ds = rig.obs(Resource::Memory, 3_000_000_000, 0);
    assert_eq!(names(&ds), ["warn", "scheduled", "throttle", "plan"]);
    assert!(matches!(ds[2].kind, DecisionKind::Throttle { factor: 0.85, interim: true, .. }));
    assert_eq!(ds[1].kind, DecisionKind::Scheduled { action: Action::Suspend, due: Time::from_secs(300) });
    let ds = rig.obs(Resource::Memory, 3_000_000_000, 301);
    assert_eq!(names(&ds), ["suspend"]);
    assert_eq!(ds[0].at, Time::from_secs(300), "stamped with the due time");
}

#[test]
fn terminate_comes_after_warn_and_delay_with_its_grace_and_ends_the_agent() {
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    let ds = rig.obs(Resource::Processes, 250, 0);
    assert_eq!(names(&ds), ["warn", "scheduled", "throttle", "plan"]);
    let ds = rig.advance(600);
    assert_eq!(names(&ds), ["terminate"]);
    assert!(matches!(ds[0].kind, DecisionKind::Terminate { grace, .. } if grace == Duration::from_secs(5)));
    assert!(rig.obs(Resource::Processes, 250, 601).is_empty(), "nothing after terminate");
    assert!(rig.obs(Resource::Memory, 5_000_000_000, 602).is_empty());
    assert_eq!(rig.policy.next_due(), None);
}

#[test]
fn scale_down_met_before_the_deadline() {
    let mut rig = Rig::standard(PolicyConfig::default());
    let ds = rig.obs(Resource::Processes, 120, 0);
    assert_eq!(names(&ds), ["warn", "scale_down", "plan"]);
    let DecisionKind::ScaleDown { target, deadline, .. } = ds[1].kind else { panic!() };
    assert_eq!((target, deadline), (80, Time::from_secs(30)));
    assert!(
        rig.obs(Resource::Processes, 85, 10).iter().all(|d| d.kind.action_name() != Some("scale_down_met")),
        "under hard is not yet under the target"
    );
    let ds = rig.obs(Resource::Processes, 79, 20);
    assert_eq!(names(&ds), ["scale_down_met"]);
    assert!(rig.advance(31).is_empty());
}

#[test]
fn scale_down_unmet_at_the_deadline_escalates_to_suspend() {
    let mut rig = Rig::standard(PolicyConfig::default());
    rig.obs(Resource::Processes, 120, 0);
    rig.obs(Resource::Processes, 90, 10);
    let ds = rig.advance(30);
    assert_eq!(names(&ds), ["suspend"]);
    assert!(matches!(ds[0].kind, DecisionKind::Suspend { after_scale_down: true, .. }));
}

#[test]
fn throttle_and_suspend_are_restored_after_sixty_healthy_seconds() {
    let mut rig = Rig::new("lightweight_agent", &[], PolicyConfig::default());
    // processes: suspend after 300 s.
    rig.obs(Resource::Processes, 30, 0);
    let ds = rig.advance(300);
    assert_eq!(names(&ds), ["suspend"]);
    // Healthy means under 80 % of hard and under soft: 9 of soft 10, hard 20.
    rig.obs(Resource::Processes, 9, 310);
    rig.obs(Resource::Processes, 9, 340);
    rig.obs(Resource::Processes, 12, 350); // a soft violation interrupts the dwell
    rig.obs(Resource::Processes, 9, 360);
    assert_eq!(rig.policy.next_due(), Some(Time::from_secs(420)));
    let ds = rig.advance(420);
    assert!(names(&ds).contains(&"restore"), "{ds:?}");
    assert!(ds.iter().any(|d| d.kind == DecisionKind::Restore { from: Hold::Suspend }));
    assert!(ds.iter().any(|d| d.kind == DecisionKind::Restore { from: Hold::Throttle }));
}

#[test]
fn burst_zone_throttles_at_once_and_becomes_hard_after_the_window() {
    let burst = LimitOverride { burst: Some(400), ..Default::default() };
    let mut rig = Rig::new("standard_agent", &[(Resource::Cpu, burst)], PolicyConfig::default());
    let ds = rig.obs(Resource::Cpu, 350, 0);
    assert_eq!(names(&ds), ["warn", "throttle", "plan"]);
    let DecisionKind::Warn { violation } = &ds[0].kind else { panic!() };
    assert_eq!(violation.kind, ViolationKind::Burst);
    assert!(rig.obs(Resource::Cpu, 350, 30).is_empty());
    let ds = rig.obs(Resource::Cpu, 350, 31);
    assert_eq!(names(&ds), ["warn", "scheduled"], "hard after the 30 s window");
}

#[test]
fn migrate_and_custom_act_at_once() {
    let mut rig = Rig::new(
        "standard_agent",
        &[with_action(Resource::Cpu, Action::Migrate), with_action(Resource::Memory, Action::Custom)],
        PolicyConfig::default(),
    );
    assert_eq!(names(&rig.obs(Resource::Cpu, 400, 0)), ["warn", "migrate", "plan"]);
    assert_eq!(names(&rig.obs(Resource::Memory, 600_000_000, 0)), ["warn", "custom", "plan"]);
}

#[test]
fn a_warn_action_only_warns() {
    let mut rig = Rig::new("lightweight_agent", &[], PolicyConfig::default());
    assert_eq!(names(&rig.obs(Resource::Memory, 200_000_000, 0)), ["warn", "plan"]);
    assert!(rig.advance(10_000).is_empty());
}

#[test]
fn two_resources_suspend_and_no_thaw_while_one_still_holds_it() {
    let cfg = PolicyConfig { delays: BTreeMap::new(), ..Default::default() };
    let mut rig =
        Rig::new("standard_agent", &[with_action(Resource::Cpu, Action::Suspend), with_action(Resource::Memory, Action::Suspend)], cfg);
    assert!(names(&rig.obs(Resource::Cpu, 400, 0)).contains(&"suspend"));
    assert!(names(&rig.obs(Resource::Memory, 600_000_000, 0)).contains(&"suspend"), "recorded again; freezing a frozen agent is a no-op");
    rig.obs(Resource::Cpu, 0, 1);
    assert!(!names(&rig.advance(100)).contains(&"restore"), "memory still holds the suspension");
    rig.obs(Resource::Memory, 1000, 101);
    let ds = rig.advance(161);
    assert_eq!(ds.iter().filter(|d| d.kind == DecisionKind::Restore { from: Hold::Suspend }).count(), 1);
}

#[test]
fn degradation_recovers_in_stages_and_rolls_back_on_relapse() {
    let mut rig = Rig::standard(PolicyConfig::default());
    rig.obs(Resource::Memory, 800_000_000, 0); // 1.6 x hard: emergency, four strategies
    rig.obs(Resource::Memory, 100_000_000, 5); // healthy from 5 s
    let ds = rig.advance(65);
    assert_eq!(names(&ds).iter().filter(|n| **n == "recovery").count(), 1, "{ds:?}");
    let ds = rig.advance(95);
    assert_eq!(names(&ds), ["recovery"]);
    let DecisionKind::Degradation { event: DegradationEvent::Recovery { stage } } = &ds[0].kind else { panic!() };
    assert_eq!((stage.stage, stage.of), (2, 4));
    let ds = rig.obs(Resource::Memory, 300_000_000, 100);
    assert!(names(&ds).contains(&"rollback"), "{ds:?}");
}

#[test]
fn operator_resume_lifts_every_hold() {
    let mut rig = Rig::new("lightweight_agent", &[], PolicyConfig::default());
    rig.obs(Resource::Processes, 30, 0);
    let ds = rig.policy.resume(&agent(), Time::from_secs(5));
    assert_eq!(names(&ds), ["restore"], "the interim throttle");
    assert_eq!(rig.policy.next_due(), None, "pending suspend dropped");
}

#[test]
fn after_a_forced_resume_the_policy_decides_again_from_fresh_samples() {
    // Found by the hostile check: a forced resume left the violation "known", so a
    // continuing hard violation was never warned or escalated again.
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    rig.obs(Resource::Memory, 3_000_000_000, 0);
    assert_eq!(names(&rig.obs(Resource::Memory, 3_000_000_000, 301)), ["suspend"]);
    rig.policy.resume(&agent(), Time::from_secs(310));
    let ds = rig.obs(Resource::Memory, 3_000_000_000, 311);
    assert_eq!(names(&ds), ["warn", "scheduled", "throttle"], "a new episode starts");
    assert_eq!(names(&rig.obs(Resource::Memory, 3_000_000_000, 612)), ["suspend"]);
}

#[test]
fn throttle_factor_table() {
    assert_eq!(throttle_factor(201, 100), 0.5);
    assert_eq!(throttle_factor(200, 100), 0.7);
    assert_eq!(throttle_factor(151, 100), 0.7);
    assert_eq!(throttle_factor(150, 100), 0.85);
    assert_eq!(throttle_factor(121, 100), 0.85);
    assert_eq!(throttle_factor(120, 100), 0.9);
    assert_eq!(throttle_factor(101, 100), 0.9);
}

// ---- property tests ----

const RESOURCES: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Processes];

/// The default configuration with its durations cut to seconds, so that cases run through whole escalations and recoveries.
fn fast_config() -> PolicyConfig {
    let secs = Duration::from_secs;
    PolicyConfig {
        delays: BTreeMap::from([(Action::Throttle, secs(3)), (Action::Suspend, secs(5)), (Action::Terminate, secs(7))]),
        terminate_grace: secs(1),
        scale_down_deadline: secs(4),
        recovery: RecoveryTiming { dwell: secs(6), stage_interval: secs(3) },
        ..PolicyConfig::default()
    }
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop::sample::select(limits::ACTIONS.to_vec())
}

/// (resource index, usage as a percentage of the hard limit, seconds since the previous observation)
type Step = (usize, u64, u64);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0usize..3, prop_oneof![0u64..60, 60u64..130, 130u64..300], 0u64..4), 1..80)
}

fn build(actions: &[Action; 3], burst: bool) -> Rig {
    let overrides: Vec<_> = RESOURCES
        .iter()
        .zip(actions)
        .map(|(r, a)| {
            let o =
                LimitOverride { soft: Some(500), hard: Some(1000), burst: burst.then_some(1500), action: Some(*a), ..Default::default() };
            (r.clone(), o)
        })
        .collect();
    Rig::new("standard_agent", &overrides, fast_config())
}

/// Runs the steps; `tick_between` inserts an `advance` before each observation.
type Seen = (Resource, u64, usize, usize);

/// Returns the decisions and, per observation, (resource, value, index range of
/// the decisions its call produced).
fn run(actions: &[Action; 3], burst: bool, steps: &[Step], tick_between: bool) -> (Vec<Decision>, Vec<Seen>) {
    let mut rig = build(actions, burst);
    let (mut out, mut seen, mut t) = (Vec::new(), Vec::new(), 0u64);
    for (r, pct, dt) in steps {
        t += dt * 1000 / 2;
        let now = Time::from_millis(t);
        if tick_between {
            out.extend(rig.policy.advance(now));
        }
        let value = pct * 10;
        let a = rig.ledger.record(&agent(), RESOURCES[*r].clone(), value, now).unwrap();
        let start = out.len();
        out.extend(rig.policy.observe(&a));
        seen.push((RESOURCES[*r].clone(), value, start, out.len()));
    }
    (out, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn decisions_are_a_pure_function_of_the_observations(actions in [action_strategy(), action_strategy(), action_strategy()], burst: bool, steps in steps()) {
        let (a, _) = run(&actions, burst, &steps, false);
        let (b, _) = run(&actions, burst, &steps, false);
        prop_assert_eq!(&a, &b);
        let (c, _) = run(&actions, burst, &steps, true);
        prop_assert_eq!(&a, &c, "polling timers in between changes nothing");
    }

    #[test]
    fn no_terminate_without_an_earlier_warn_for_that_violation(actions in [action_strategy(), action_strategy(), action_strategy()], burst: bool, steps in steps()) {
        let (ds, _) = run(&actions, burst, &steps, false);
        for (i, d) in ds.iter().enumerate() {
            if let DecisionKind::Terminate { .. } = d.kind {
                let warned = ds[..i].iter().rev()
                    .filter(|e| e.resource == d.resource)
                    .take_while(|e| !matches!(e.kind, DecisionKind::CancelPending { .. }))
                    .any(|e| matches!(&e.kind, DecisionKind::Warn { violation } if violation.kind == ViolationKind::Hard));
                prop_assert!(warned, "terminate at {} without a warn: {:?}", d.at, ds);
            }
        }
    }

    #[test]
    fn a_pending_action_whose_violation_cleared_is_never_executed(actions in [action_strategy(), action_strategy(), action_strategy()], burst: bool, steps in steps()) {
        let (ds, seen) = run(&actions, burst, &steps, false);
        let mut scheduled: BTreeMap<Resource, usize> = BTreeMap::new();
        for (j, d) in ds.iter().enumerate() {
            match &d.kind {
                DecisionKind::Scheduled { .. } => { scheduled.insert(d.resource.clone(), j); }
                DecisionKind::CancelPending { .. } => { scheduled.remove(&d.resource); }
                DecisionKind::Throttle { interim: false, .. } | DecisionKind::Suspend { after_scale_down: false, .. } | DecisionKind::Terminate { .. } => {
                    if let Some(i) = scheduled.remove(&d.resource) {
                        // Every observation of this resource applied between the scheduling and the action was above hard.
                        for (r, v, start, end) in &seen {
                            if *r == d.resource && *start > i && *end <= j {
                                prop_assert!(*v > 1000, "{} executed at {} although usage was {} before: {:?}", d.kind.action_name().unwrap(), d.at, v, ds);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn decisions_come_in_time_order(actions in [action_strategy(), action_strategy(), action_strategy()], burst: bool, steps in steps()) {
        let (ds, _) = run(&actions, burst, &steps, false);
        prop_assert!(ds.windows(2).all(|w| w[0].at <= w[1].at), "{:?}", ds);
    }
}

/// After a restart, an escalation the previous governor scheduled is resumed
/// with its deadline at the first fresh assessment: carried out on time while
/// the violation holds (no second warning, no new delay), cancelled when it cleared.
#[test]
fn a_restored_escalation_keeps_its_deadline_or_is_cancelled_when_the_violation_cleared() {
    // Still over hard at the first sample after the restart (t=200): due at 300 as scheduled, not 200 + 300.
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    let a = rig.ledger.record(&agent(), Resource::Memory, 3_000_000_000, Time::from_secs(200)).unwrap();
    assert_eq!(rig.policy.restore_pending(&a, Action::Suspend, Time::from_secs(300)), None);
    let ds = rig.policy.observe(&a);
    assert!(!names(&ds).contains(&"scheduled") && !names(&ds).contains(&"warn"), "not a new episode: {:?}", names(&ds));
    assert_eq!(rig.policy.next_due(), Some(Time::from_secs(300)));
    let ds = rig.obs(Resource::Memory, 3_000_000_000, 301);
    assert_eq!(names(&ds), ["suspend"]);
    assert_eq!(ds[0].at, Time::from_secs(300), "on the original deadline");

    // Its deadline passed while no governor ran: carried out at the first sample that confirms the violation.
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    let a = rig.ledger.record(&agent(), Resource::Memory, 3_000_000_000, Time::from_secs(900)).unwrap();
    assert_eq!(rig.policy.restore_pending(&a, Action::Suspend, Time::from_secs(300)), None);
    let ds = rig.policy.observe(&a);
    assert_eq!(names(&ds).into_iter().filter(|n| *n != "plan").collect::<Vec<_>>(), ["suspend"], "no new warning or delay");

    // Cleared while the governor was down: cancelled, and nothing falls due.
    let mut rig = Rig::new("heavy_computation_agent", &[], PolicyConfig::default());
    let a = rig.ledger.record(&agent(), Resource::Memory, 1_000_000, Time::from_secs(200)).unwrap();
    let d = rig.policy.restore_pending(&a, Action::Suspend, Time::from_secs(300)).expect("cancelled");
    assert_eq!(d.kind, DecisionKind::CancelPending { action: Action::Suspend, usage: 1_000_000 });
    rig.policy.observe(&a);
    assert_eq!(rig.policy.next_due(), None);
}

#[test]
fn usage_hovering_on_the_soft_limit_is_one_episode_one_warning_then_cleared() {
    // standard_agent cpu: soft 150m, hard 300m. A throttled agent used to hover on soft
    // and got a quota.warning at every crossing (43 in 50 s).
    let mut rig = Rig::standard(PolicyConfig::default());
    let mut all = Vec::new();
    for s in 0..50 {
        all.extend(rig.obs(Resource::Cpu, if s % 2 == 0 { 160 } else { 140 }, s));
    }
    let warns = all.iter().filter(|d| matches!(d.kind, DecisionKind::Warn { .. })).count();
    assert_eq!(warns, 1, "one warning for the episode: {:?}", names(&all));
    // Clear for less than the dwell: the episode goes on.
    let mut later = Vec::new();
    for s in 50..109 {
        later.extend(rig.obs(Resource::Cpu, 100, s));
    }
    assert!(!names(&later).contains(&"cleared"), "cleared before the dwell: {:?}", names(&later));
    let ds = rig.obs(Resource::Cpu, 100, 110);
    assert!(ds.iter().any(|d| matches!(d.kind, DecisionKind::Cleared { worst: ViolationKind::Soft, usage: 100 })), "{:?}", names(&ds));
    assert!(rig.obs(Resource::Cpu, 100, 111).iter().all(|d| !matches!(d.kind, DecisionKind::Cleared { .. })), "cleared once");
    // A violation after the episode ended is a new episode: warned again.
    assert_eq!(names(&rig.obs(Resource::Cpu, 160, 112))[0], "warn");
}

#[test]
fn an_episode_warns_again_only_when_it_escalates() {
    let over = |k: ViolationKind| move |d: &Decision| matches!(&d.kind, DecisionKind::Warn { violation } if violation.kind == k);
    let mut rig = Rig::standard(PolicyConfig::default());
    assert!(rig.obs(Resource::Memory, 300 * MB, 0).iter().any(over(ViolationKind::Soft)));
    assert!(rig.obs(Resource::Memory, 100 * MB, 1).is_empty());
    assert!(rig.obs(Resource::Memory, 300 * MB, 2).iter().all(|d| !matches!(d.kind, DecisionKind::Warn { .. })), "same episode");
    let ds = rig.obs(Resource::Memory, 520 * MB, 3);
    assert!(ds.iter().any(over(ViolationKind::Hard)), "escalation to hard warns: {:?}", names(&ds));
    assert!(rig.obs(Resource::Memory, 300 * MB, 4).iter().all(|d| !matches!(d.kind, DecisionKind::Warn { .. })));
}

const MB: u64 = 1024 * 1024;

#[test]
fn a_throttle_settles_under_the_soft_limit_with_headroom() {
    use allot_core::policy::{THROTTLE_HEADROOM_PERMILLE, throttle_target};
    // The built-in groups: 0.5 x hard is exactly soft, which left usage on soft.
    let cpu = Limit::new(150, 300, Action::Throttle);
    assert_eq!(throttle_target(0.5, 1000, Some(&cpu), 10), 135);
    assert_eq!(throttle_target(0.9, 100, Some(&cpu), 10), 90, "factor x use when that is already under soft");
    assert_eq!(throttle_target(0.5, 10, Some(&cpu), 10), 10, "never under the floor");
    assert_eq!(throttle_target(0.7, 1000, None, 10), 700, "without a limit: factor x use");
    proptest!(|(soft in 0u64..1 << 40, extra in 0u64..1 << 40, usage in 0u64..1 << 42, f in prop::sample::select(vec![0.5, 0.7, 0.85, 0.9]))| {
        let l = Limit::new(soft, soft + extra, Action::Throttle);
        let t = throttle_target(f, usage, Some(&l), 0);
        prop_assert!(u128::from(t) * 1000 <= u128::from(soft) * u128::from(THROTTLE_HEADROOM_PERMILLE));
        prop_assert!(t as f64 <= usage as f64 * f + 1.0);
    });
}
