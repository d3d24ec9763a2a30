//! The governor's timer paths under paused tokio time, with a scripted
//! backend (usage as a function of time, actuators that record their calls):
//! delay then cancel, delay then act, grace then kill, deadline then
//! escalate, dwell then restore.
#![allow(clippy::unwrap_used)]

mod common;

use common::{FakeBackend, Log};
use std::path::PathBuf;
use std::time::Duration;

/// The `[policy]` settings of every run.
const POLICY: &str = r#"
delays = { throttle = "5s", suspend = "8s", terminate = "6s" }
terminate_grace = "3s"
scale_down_deadline = "4s"
recovery_dwell = "10s"
recovery_stage_interval = "2s"
sample_interval = "1s"
"#;

struct Run {
    log: Log,
    history: Vec<allot_store::EnforcementRecord>,
    exits: std::collections::BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

async fn run(limits: &str, script: impl Fn(u64) -> (u64, u64, u64) + Send + Sync + 'static, secs: u64) -> Run {
    run_with(limits, script, secs, None).await
}

async fn run_with(
    limits: &str,
    script: impl Fn(u64) -> (u64, u64, u64) + Send + Sync + 'static,
    secs: u64,
    exit_after: Option<u64>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state.db");
    let log = Log::default();
    let backend = FakeBackend { exit_after, ..FakeBackend::new(script, log.clone()) };
    let gov = common::governor(&common::fleet(POLICY, &[("a", limits)]), backend, state.clone());
    let summary = gov.run(Some(Duration::from_secs(secs))).await.unwrap();
    let history = allot_store::Store::open_read_only(&state).unwrap().history(Some("a")).unwrap();
    Run { log, history, exits: summary.exits, _dir: dir }
}

fn actions(h: &[allot_store::EnforcementRecord]) -> Vec<(String, String)> {
    h.iter().map(|r| (r.action.clone(), r.outcome.clone())).collect()
}

#[tokio::test(start_paused = true)]
async fn delay_then_cancel() {
    // cpu over hard (300m) for 3 s, then back under: the throttle due at 5 s is cancelled.
    let r = run("", |t| (1 << 20, if t < 3000 { 600 } else { 50 }, 1), 20).await;
    let a = actions(&r.history);
    assert!(a.contains(&("throttle (scheduled)".into(), "success".into())), "{a:?}");
    assert!(a.contains(&("throttle".into(), "cancelled".into())), "{a:?}");
    assert!(!a.contains(&("throttle".into(), "success".into())), "{a:?}");
    assert_eq!(r.log.has("cpu_limit Some"), None, "{:?}", r.log.calls());
}

#[tokio::test(start_paused = true)]
async fn delay_then_act() {
    let r = run("", |_| (1 << 20, 600, 1), 20).await;
    let a = actions(&r.history);
    assert!(a.contains(&("throttle".into(), "success".into())), "{a:?}");
    let scheduled = r.history.iter().find(|x| x.action == "throttle (scheduled)").unwrap().at_ms;
    let acted = r.history.iter().find(|x| x.action == "throttle" && x.outcome == "success").unwrap().at_ms;
    assert_eq!(acted - scheduled, 5000, "acts exactly at the end of the delay");
    let t = r.log.has("cpu_limit Some").unwrap();
    assert!((5000..=7000).contains(&t), "{:?}", r.log.calls());
}

#[tokio::test(start_paused = true)]
async fn grace_then_kill() {
    let r = run(&common::memory_limit("terminate"), |_| (30 << 20, 10, 1), 30).await;
    let term = r.log.has("signal").unwrap();
    let kill = r.log.has("kill").unwrap();
    assert_eq!(kill - term, 3000, "killed exactly when the grace ends: {:?}", r.log.calls());
    assert!(r.exits["a"].contains("terminated by allot: memory"), "{:?}", r.exits);
    let a = actions(&r.history);
    assert_eq!(a.iter().filter(|(x, o)| x == "terminate" && o == "success").count(), 2, "notice and kill: {a:?}");
}

#[tokio::test(start_paused = true)]
async fn deadline_then_escalate() {
    let r = run(&common::memory_limit("scale_down"), |_| (30 << 20, 10, 1), 20).await;
    let req = r.history.iter().find(|x| x.action == "scale_down").unwrap().at_ms;
    let sus = r.history.iter().find(|x| x.action == "suspend").unwrap();
    assert_eq!(sus.at_ms - req, 4000);
    assert!(sus.detail.contains("scale_down unmet"), "{}", sus.detail);
    assert!(r.log.has("freeze").is_some());
}

#[tokio::test(start_paused = true)]
async fn scale_down_met_is_not_escalated() {
    let r = run(&common::memory_limit("scale_down"), |t| (if t < 3000 { 30 << 20 } else { 5 << 20 }, 10, 1), 20).await;
    let a = actions(&r.history);
    assert!(a.contains(&("scale_down".into(), "success".into())), "{a:?}");
    assert!(r.history.iter().any(|x| x.detail.starts_with("met:")), "{a:?}");
    assert!(!a.iter().any(|(x, _)| x == "suspend"), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn dwell_then_restore() {
    // Over hard for 8 s (throttled at 5 s), then healthy: restored 10 s later.
    let r = run("", |t| (1 << 20, if t < 8000 { 600 } else { 20 }, 1), 40).await;
    let throttled = r.log.has("cpu_limit Some").unwrap();
    let restored = r.log.has("cpu_limit None").unwrap();
    assert!(throttled < 8000, "{:?}", r.log.calls());
    assert!((18_000..=20_000).contains(&restored), "restored at {restored}: {:?}", r.log.calls());
    assert!(actions(&r.history).contains(&("restore".into(), "success".into())));
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_with_backoff_up_to_the_limit() {
    // The agent fails 2 s after every start; restarts after 1 s, 2 s, then gives up (max 2).
    let r = run_with("restart = \"on-failure\"\nmax_restarts = 2", |_| (1 << 20, 10, 1), 30, Some(2000)).await;
    let starts: Vec<u64> = r.log.calls().into_iter().filter(|(_, s)| s == "start").map(|(t, _)| t).collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    // Each exit is seen at the first sample tick at or after 2 s; backoff 1 s, then 2 s.
    assert!((3000..=4000).contains(&(starts[1] - starts[0])), "{starts:?}");
    assert!((4000..=5000).contains(&(starts[2] - starts[1])), "{starts:?}");
    assert!(r.exits["a"].contains("exit status 1 (its own exit)"), "{:?}", r.exits);
}

#[tokio::test(start_paused = true)]
async fn never_restart_leaves_it_exited() {
    let r = run_with("", |_| (1 << 20, 10, 1), 10, Some(2000)).await;
    assert_eq!(r.log.calls().iter().filter(|(_, s)| s == "start").count(), 1);
    assert!(r.exits["a"].starts_with("exit status 1"), "{:?}", r.exits);
}

#[tokio::test(start_paused = true)]
async fn analytics_run_on_their_timer_and_warn_of_a_forecast_crossing() {
    // Memory grows 100 kB/s from 100 MB against a hard limit of 300 MiB: the
    // crossing is about 35 minutes out at first, under 10 minutes after ~25 min.
    let limits = "limits.memory = { soft = \"250Mi\", hard = \"300Mi\", action = \"warn\" }";
    let policy = format!("{POLICY}analytics_interval = \"1m\"\nanalytics_window = \"10m\"\nforecast_horizon = \"10m\"\n");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let backend = FakeBackend::new(|t| (100_000_000 + t * 100, 10, 1), Log::default());
    common::governor(&common::fleet(&policy, &[("a", limits)]), backend, state.clone())
        .run(Some(Duration::from_secs(30 * 60)))
        .await
        .unwrap();
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let events = store.events_since(0, 1_000_000).unwrap();
    let start = events[0].at_ms;
    let forecast = events.iter().find(|e| e.topic == "resource_management.alert.forecast").expect("a forecast alert");
    let at_min = (forecast.at_ms - start) as f64 / 60_000.0;
    let eta = forecast.data["eta_secs"].as_f64().unwrap();
    // 300 MiB = 314.6 MB is reached at t = 2146 s (35.8 min).
    assert!((24.0..=27.0).contains(&at_min), "warned at {at_min:.1} min");
    assert!(eta <= 600.0 && (forecast.at_ms - start) as f64 / 1000.0 + eta - 2146.0 < 60.0, "eta {eta}");
    let recs = events.iter().filter(|e| e.topic == "resource_management.recommendation").count();
    assert!((1..10).contains(&recs), "recommendations do not flap: {recs}");
    let analyses = store.analyses(Some("a")).unwrap();
    assert!(analyses.iter().any(|a| a.1 == "memory" && a.3["pattern"] == "growing"), "{analyses:?}");
}

/// Deadlines past every clock (settings made in code skip the fleet file's
/// bound on durations) are never reached, and never panic the governor.
#[tokio::test(start_paused = true)]
async fn deadlines_past_every_clock_do_not_panic() {
    use allot_core::limits::Action;
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state.db");
    let log = Log::default();
    let backend = FakeBackend::new(|_| (30 << 20, 600, 1), log.clone());
    let mut fleet = allot::fleet::parse(&common::fleet(POLICY, &[("a", &common::memory_limit("terminate"))])).unwrap();
    let forever = Duration::MAX;
    for action in [Action::Throttle, Action::Suspend, Action::Terminate] {
        fleet.settings.policy.delays.insert(action, forever);
    }
    // (terminate_grace stays 3 s: the stop at the end waits it out in `stop::stop_all`.)
    fleet.settings.policy.scale_down_deadline = forever;
    fleet.settings.policy.recovery.dwell = forever;
    fleet.settings.analytics_interval = forever;
    let gov = allot::governor::Governor::new(fleet, backend, &common::options(state.clone())).unwrap();
    let summary = gov.run(Some(Duration::from_secs(20))).await.unwrap();
    assert!(summary.exits["a"].contains("stopped by allot (--for elapsed)"), "the agent ran to the end: {:?}", summary.exits);
    let history = allot_store::Store::open_read_only(&state).unwrap().history(Some("a")).unwrap();
    let a = actions(&history);
    assert!(a.contains(&("terminate (scheduled)".into(), "success".into())), "{a:?}");
    assert!(a.contains(&("throttle (scheduled)".into(), "success".into())), "{a:?}");
    assert!(!a.iter().any(|(x, _)| x == "suspend" || x == "terminate"), "nothing acted before its deadline: {a:?}");
}
