//! The decision record carries the values written: a throttle's cpu limit
//! in millicores, memory.high in bytes, a freeze, the backstops; the same
//! values the actuator was given (the scripted backend logs its calls).
#![allow(clippy::unwrap_used)]

mod common;

use allot::governor::control::{Control, OperatorAction};
use common::{FakeBackend, Log};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const POLICY: &str = r#"
delays = { throttle = "2s" }
sample_interval = "1s"
"#;

/// The values an actuator call of the log was given: `cpu_limit Some(120)` -> 120.
fn logged(calls: &[(u64, String)], prefix: &str) -> Vec<u64> {
    calls.iter().filter_map(|(_, c)| c.strip_prefix(prefix)?.strip_prefix(" Some(")?.strip_suffix(')')?.parse().ok()).collect()
}

#[tokio::test(start_paused = true)]
async fn enforcement_records_carry_the_values_written() {
    // cpu 600m against a 200m hard limit, memory 30Mi against 20Mi: both throttled after 2 s.
    let log = Log::default();
    let backend = FakeBackend::new(|_| (30 << 20, 600, 1), log.clone());
    let start = backend.start;
    let limits =
        format!("{}\nlimits.cpu = {{ soft = \"100m\", hard = \"200m\", action = \"throttle\" }}", common::memory_limit("throttle"));
    let fleet = common::fleet(POLICY, &[("a", &limits)]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (tx, rx) = mpsc::unbounded_channel();
    let gov = common::governor(&fleet, backend, state.clone()).with_control(rx);
    let run = tokio::spawn(gov.run(Some(Duration::from_secs(8))));
    tokio::time::sleep_until(start + Duration::from_secs(6)).await;
    let (rtx, rrx) = oneshot::channel();
    tx.send(Control::Act("a".into(), OperatorAction::Suspend, rtx)).unwrap();
    rrx.await.unwrap().unwrap();
    run.await.unwrap().unwrap();

    let calls = log.of("a");
    let history = allot_store::Store::open_read_only(&state).unwrap().history(Some("a")).unwrap();
    let written = |resource: &str, action: &str| -> Vec<serde_json::Value> {
        history.iter().filter(|r| r.resource == resource && r.action == action).filter_map(|r| r.decision.get("written").cloned()).collect()
    };
    let cpu = written("cpu", "throttle");
    assert!(!cpu.is_empty(), "{history:#?}");
    let cpu_limits = logged(&calls, "cpu_limit");
    for w in &cpu {
        let m = w["cpu_millicores"].as_u64().unwrap_or_else(|| panic!("{w}"));
        assert!(cpu_limits.contains(&m), "the cpu limit recorded ({m}m) is one written: {cpu_limits:?}");
    }
    let mem = written("memory", "throttle");
    let highs = logged(&calls, "memory_high");
    assert!(!mem.is_empty(), "{history:#?}");
    for w in &mem {
        // memory.high where the host has it; a cpu limit in its stead where it has not.
        match (w["memory_high"].as_u64(), w["cpu_millicores"].as_u64()) {
            (Some(b), _) => assert!(highs.contains(&b), "memory.high recorded ({b}) is one written: {highs:?}"),
            (None, Some(m)) => assert!(cpu_limits.contains(&m), "{w}"),
            _ => panic!("no value in {w}"),
        }
    }
    // The operator's suspension: the freeze; the event carries the same values.
    assert_eq!(written("-", "suspend"), [serde_json::json!({"frozen": true})], "{history:#?}");
    let events = allot_store::Store::open_read_only(&state).unwrap().events_since(0, 10_000).unwrap();
    let suspended = events.iter().find(|e| e.topic == "resource_management.enforcement.suspend").unwrap();
    assert_eq!(suspended.data["written"], serde_json::json!({"frozen": true}), "{suspended:?}");
}
