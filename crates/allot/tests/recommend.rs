//! `allot recommend` after a governor run (scripted backend, paused time):
//! it shows the recommendation of the latest analysis, never one an older
//! analysis left, and one `change_group` per agent.
#![allow(clippy::unwrap_used)]

mod common;

use common::{FakeBackend, Log};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const POLICY: &str = "sample_interval = \"1s\"\nanalytics_interval = \"1m\"\nanalytics_window = \"5m\"\nforecast_horizon = \"10m\"\n";

fn allot(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_allot")).args(args).output().unwrap()
}

#[tokio::test(start_paused = true)]
async fn recommend_shows_the_latest_analysis_and_one_group_change_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // "leaker": memory grows 300 kB/s for 10 minutes (an increase is
    // recommended), then holds at 150 MB, which its 300Mi limit fits.
    let leaker = "limits.memory = { soft = \"250Mi\", hard = \"300Mi\", action = \"warn\" }";
    // "small": 20 MB, 10m of cpu and one process in standard_agent: every
    // resource fits lightweight_agent.
    let fleet = common::fleet(POLICY, &[("leaker", leaker), ("small", "")]);
    let mut backend = FakeBackend::new(|_| (20_000_000, 10, 1), Log::default());
    backend.scripts.insert(
        "leaker".into(),
        Arc::new(|t: u64| (if t < 600_000 { 100_000_000 + t * 300 } else { 150_000_000 + (t / 1000 * 7919 % 13) * 10_000 }, 10, 1)),
    );
    common::governor(&fleet, backend, state.clone()).run(Some(Duration::from_secs(20 * 60))).await.unwrap();

    let store = allot_store::Store::open_read_only(&state).unwrap();
    let events = store.events_since(0, 1_000_000).unwrap();
    let recs: Vec<&allot_store::StoredEvent> = events.iter().filter(|e| e.topic == "resource_management.recommendation").collect();
    assert!(
        recs.iter().any(|e| e.agent.as_deref() == Some("leaker") && e.data["recommendation"]["kind"] == "increase_quota"),
        "an increase was recommended while it grew: {recs:?}"
    );

    let s = state.to_str().unwrap();
    let o = allot(&["recommend", "--state", s, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    // The latest analysis of the leaker's memory is steady and fits: no
    // recommendation, certainly not the increase of an older analysis.
    let stale: Vec<&Value> = rows.iter().filter(|r| r["agent"] == "leaker" && r["resource"] == "memory").collect();
    assert!(stale.is_empty(), "{stale:?}");
    for r in rows.iter().filter(|r| r["recommendation"]["kind"] == "increase_quota") {
        assert_eq!(r["pattern"], "growing", "an increase belongs to a growing analysis: {r}");
    }
    // One change_group for "small", for all its resources.
    let changes: Vec<&Value> = rows.iter().filter(|r| r["agent"] == "small" && r["recommendation"]["kind"] == "change_group").collect();
    assert_eq!(changes.len(), 1, "{rows:?}");
    assert_eq!(changes[0]["recommendation"]["group"], "lightweight_agent");
    assert!(rows.iter().filter(|r| r["agent"] == "small").count() == 1, "nothing per resource beside it: {rows:?}");

    // The text table says the same, in units and wire names.
    let o = allot(&["recommend", "--state", s]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("change_group") && text.contains("group lightweight_agent"), "{text}");
    assert!(!text.contains("increase_quota"), "{text}");
}
