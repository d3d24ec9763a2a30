//! Retention while the governor runs (paused tokio time, the scripted
//! backend): the store is pruned on the `[retention]` interval, not only at
//! start; exited agents leave the governor's memory beyond a count or after
//! a time, and answer from the store afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use allot::governor::control::{AgentStatus, Control};
use common::{FakeBackend, Log};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const POLICY: &str = "sample_interval = \"1s\"\n";

#[tokio::test(start_paused = true)]
async fn the_store_is_pruned_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let fleet = format!("{}\n[retention]\nsamples = \"2m\"\nevents = \"1m\"\ninterval = \"1m\"\n", common::fleet(POLICY, &[("a", "")]));
    let backend = FakeBackend::new(|_| (1 << 20, 10, 1), Log::default());
    let start = backend.start;
    let gov = common::governor(&fleet, backend, state.clone());
    let (tx, rx) = mpsc::unbounded_channel::<Control>();
    let run = tokio::spawn(gov.with_control(rx).run(Some(Duration::from_secs(600))));
    // Half way: the first minutes' samples are gone already, while the governor runs.
    tokio::time::sleep_until(start + Duration::from_secs(300)).await;
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let mid = store.samples("a", "memory", 0).unwrap();
    let (first, last) = (mid.first().unwrap().0, mid.last().unwrap().0);
    assert!(last - first <= 3 * 60_000, "2 min kept, pruned every minute: {first}..{last}");
    assert!(mid.len() >= 100, "the last two minutes stay: {}", mid.len());
    let started = store.events_since(0, 10).unwrap();
    assert!(started.iter().all(|e| e.topic != "resource_management.agent.started"), "an event older than 1 min went: {started:?}");
    drop(tx);
    run.await.unwrap().unwrap();
    let end = store.samples("a", "memory", 0).unwrap();
    assert!(end.last().unwrap().0 - end.first().unwrap().0 <= 3 * 60_000);
}

/// An agent definition `name` in the standard group (the scripted backend runs nothing).
fn def(name: &str) -> Box<allot::fleet::AgentDef> {
    let text = common::fleet("", &[(name, "")]);
    Box::new(allot::fleet::parse(&text).unwrap().agents.remove(0))
}

async fn list(tx: &mpsc::UnboundedSender<Control>) -> Vec<AgentStatus> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Control::List(rtx)).unwrap();
    rrx.await.unwrap()
}

async fn get(tx: &mpsc::UnboundedSender<Control>, id: &str) -> Option<AgentStatus> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Control::Agent(id.into(), rtx)).unwrap();
    rrx.await.unwrap()
}

/// The quota alone (`GET /v1/agents/{id}/quota`).
async fn quota(tx: &mpsc::UnboundedSender<Control>, id: &str) -> Option<serde_json::Value> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Control::Quota(id.into(), rtx)).unwrap();
    rrx.await.unwrap()
}

async fn start(tx: &mpsc::UnboundedSender<Control>, id: &str) {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Control::Start(def(id), rtx)).unwrap();
    rrx.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn exited_agents_are_forgotten_beyond_a_count_and_after_a_time_and_answer_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let fleet = format!("[policy]\n{POLICY}\n[retention]\ninterval = \"1s\"\nforget_exited_after = \"10m\"\nforget_exited_beyond = 50\n");
    // Every agent exits on its own 500 ms after it starts.
    let backend = FakeBackend { exit_after: Some(500), ..FakeBackend::new(|_| (1 << 20, 10, 1), Log::default()) };
    let t0 = backend.start;
    let gov = common::governor(&fleet, backend, state.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let run = tokio::spawn(gov.with_control(rx).run(Some(Duration::from_secs(3600))));
    // 200 start/exit cycles, one every 100 ms.
    for i in 0..200 {
        start(&tx, &format!("x{i:03}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let agents = list(&tx).await;
    assert_eq!(agents.len(), 50, "at most 50 exited agents are remembered");
    assert!(agents.iter().all(|a| a.state == "exited"), "{agents:?}");
    assert_eq!(agents[0].id, "x150", "the most recently exited are kept");
    // A forgotten agent answers from the store; its channel file is gone, a remembered one's is there.
    let old = get(&tx, "x000").await.expect("a forgotten exited agent answers from its stored row");
    assert_eq!((old.state.as_str(), old.group.as_str()), ("exited", "standard_agent"));
    assert!(old.exit.as_deref().unwrap().contains("exit status 1"), "{old:?}");
    assert!(!dir.path().join("agents/x000.jsonl").exists());
    assert!(dir.path().join("agents/x199.jsonl").exists());
    assert!(get(&tx, "never-was").await.is_none());
    // The quota read alone answers as the status does: a remembered agent's and a forgotten one's.
    for id in ["x000", "x199"] {
        let q = quota(&tx, id).await.unwrap();
        assert_eq!(q, get(&tx, id).await.unwrap().quota, "{id}");
    }
    assert!(quota(&tx, "never-was").await.is_none());
    // Its history stays.
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let topics: Vec<String> =
        store.events_since(0, 100_000).unwrap().into_iter().filter(|e| e.agent.as_deref() == Some("x000")).map(|e| e.topic).collect();
    assert!(
        topics.ends_with(&["resource_management.agent.started".to_owned(), "resource_management.agent.exited".to_owned()]),
        "{topics:?}"
    );
    // A forgotten id can be started again.
    start(&tx, "x000").await;
    assert_eq!(get(&tx, "x000").await.unwrap().state, "running");
    let q = quota(&tx, "x000").await.unwrap();
    assert!(q["limits"]["memory"].is_object(), "{q}");
    assert_eq!(q, get(&tx, "x000").await.unwrap().quota);
    // Ten minutes after they exited, none is remembered.
    tokio::time::sleep_until(t0 + Duration::from_secs(20 * 60)).await;
    assert!(list(&tx).await.is_empty());
    assert_eq!(get(&tx, "x199").await.unwrap().state, "exited", "still in the store (kept 7 days)");
    drop(tx);
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_an_api_exited_agents_stay_for_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::fleet(POLICY, &[("a", ""), ("b", "")]);
    let fleet = format!("{text}\n[retention]\ninterval = \"1s\"\nforget_exited_after = \"0s\"\nforget_exited_beyond = 0\n");
    let backend = FakeBackend { exit_after: Some(500), ..FakeBackend::new(|_| (1 << 20, 10, 1), Log::default()) };
    let summary = common::governor(&fleet, backend, dir.path().join("state.db")).run(Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(summary.exits.keys().collect::<Vec<_>>(), ["a", "b"], "{summary:?}");
}
