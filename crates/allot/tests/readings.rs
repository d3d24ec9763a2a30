//! Readings through the governor with a scripted backend (paused tokio
//! time): what a sample may conclude from how long ago the last one was.
#![allow(clippy::unwrap_used)]

mod common;

use allot_sys::notify::Notice;
use common::{FakeBackend, Log};
use std::time::Duration;

/// A memory notice arrives at 1.5 s, 2.5 s, ... 8.5 s; the follow-up samples
/// come 5, 20, 50 and 100 ms after it. The agent uses 20m, except for one
/// 5 ms step of a full core just before each follow-up 5 ms after a notice
/// (as a scheduler tick lands in cpuacct at once): about 25m over a second,
/// 1000m over those 5 ms. Before rates needed 100 ms, that 5 ms interval
/// gave a cpu reading of 1000m, over the 300m hard limit of the standard
/// group: a critical cpu alert and a throttle scheduled for an agent using
/// a fortieth of its limit.
#[tokio::test(start_paused = true)]
async fn follow_up_samples_after_a_notice_give_no_cpu_reading() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let log = Log::default();
    let script = |t: u64| {
        let cpu = if (501..=505).contains(&(t % 1000)) { 1000 } else { 20 };
        (5 << 20, cpu, 1)
    };
    let backend = FakeBackend::new(script, log.clone());
    let policy = r#"sample_interval = "1s""#;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gov = common::governor(&common::fleet(policy, &[("a", "")]), backend, state.clone()).with_notices(rx);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..8 {
            let _ = tx.send(("a".to_owned(), Notice::MemoryThreshold { bytes: 4 << 20 }));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    gov.run(Some(Duration::from_secs(10))).await.unwrap();

    let store = allot_store::Store::open_read_only(&state).unwrap();
    let memory = store.samples("a", "memory", 0).unwrap();
    let cpu = store.samples("a", "cpu", 0).unwrap();
    // The follow-ups happened: memory was read at each of them, besides the ticks.
    assert!(memory.len() >= 8 * 5, "memory read {} times: {memory:?}", memory.len());
    // cpu is read at the ticks only (one a second), each over a whole second.
    assert!((8..=11).contains(&cpu.len()), "cpu read {} times: {cpu:?}", cpu.len());
    assert!(cpu.iter().all(|(_, m)| *m <= 30), "a cpu reading from a short interval: {cpu:?}");
    let events = store.events_since(0, 10_000).unwrap();
    let cpu_alerts: Vec<_> = events.iter().filter(|e| e.topic.contains(".alert.") && e.data["resource"] == "cpu").collect();
    assert!(cpu_alerts.is_empty(), "{cpu_alerts:?}");
    let history = store.history(Some("a")).unwrap();
    assert!(history.iter().all(|r| r.resource != "cpu"), "{history:?}");
}

/// `threads` is a resource of its own: accepted by the fleet file, read at
/// every sample, and the one `pids.max` backs when it is limited (it counts
/// tasks); an agent limiting processes only gets them as a task ceiling.
#[tokio::test(start_paused = true)]
async fn threads_are_read_and_back_pids_max() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let log = Log::default();
    let backend = FakeBackend::new(|_| (5 << 20, 10, 3), log.clone());
    let agents = [
        ("t", r#"limits.threads = { soft = 300, hard = 400, burst = 500, action = "warn" }"#),
        ("p", r#"limits.processes = { soft = 20, hard = 30, action = "warn" }"#),
    ];
    let gov = common::governor(&common::fleet(r#"sample_interval = "1s""#, &agents), backend, state.clone());
    gov.run(Some(Duration::from_secs(3))).await.unwrap();
    assert!(log.of("t").iter().any(|(_, c)| c == "pids_max Some(500)"), "{:?}", log.of("t"));
    assert!(log.of("p").iter().any(|(_, c)| c == "pids_max Some(30)"), "{:?}", log.of("p"));
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let threads = store.samples("t", "threads", 0).unwrap();
    assert!(threads.len() >= 2 && threads.iter().all(|(_, v)| *v == 3), "{threads:?}");
}

/// The inactive page cache (`memory.stat`, the dearest read of a sample) is
/// read only when a decision may need it (`allot_core::working_set`): far
/// from its memory limits an agent's figure is read at start and then once
/// a minute; from 90 % of its soft limit on (raw usage, page cache
/// included) it is read every sample, so no decision near a limit uses a
/// stale figure. Here the agent holds 80 MiB of cache beside a 10 MiB
/// working set (raw 90 MiB, under 90 % of its 200 MiB soft limit) until
/// 20 s; then its working set grows to 230 MiB and the cache is dropped.
/// With the stale figure (80 MiB) its memory would read 150 MiB, under the
/// soft limit; read afresh it is 230 MiB, over it, and the warning comes.
#[tokio::test(start_paused = true)]
async fn the_page_cache_is_read_afresh_near_a_limit_and_seldom_far_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let log = Log::default();
    let mut backend = FakeBackend::new(|t| (if t < 20_000 { 10 << 20 } else { 230 << 20 }, 10, 1), log.clone());
    backend.caches.insert("a".into(), std::sync::Arc::new(|t| if t < 20_000 { 80 << 20 } else { 0 }));
    let limit = r#"limits.memory = { soft = "200Mi", hard = "400Mi", action = "warn" }"#;
    let gov = common::governor(&common::fleet(r#"sample_interval = "1s""#, &[("a", limit)]), backend, state.clone());
    gov.run(Some(Duration::from_secs(90))).await.unwrap();

    let reads: Vec<u64> = log.of("a").into_iter().filter(|(_, c)| c == "memory.stat").map(|(t, _)| t).collect();
    let far: Vec<u64> = reads.iter().copied().filter(|t| *t < 20_000).collect();
    assert_eq!(far.len(), 1, "far from its limits: read at start only (then once a minute): {reads:?}");
    let near = reads.iter().filter(|t| **t >= 20_000).count();
    assert!(near >= 65, "near a limit: read every sample from 20 s to 90 s: {near} reads: {reads:?}");
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let memory = store.samples("a", "memory", 0).unwrap();
    let start = memory[0].0; // the first sample, at 0 s of the run
    let far: Vec<u64> = memory.iter().filter(|(at, _)| *at - start < 20_000).map(|(_, v)| *v).collect();
    assert!(far.len() >= 19 && far.iter().all(|v| *v == 10 << 20), "the working set, far from the limit: {far:?}");
    let after: Vec<u64> = memory.iter().filter(|(at, _)| *at - start > 20_500).map(|(_, v)| *v).collect();
    assert!(!after.is_empty() && after.iter().all(|v| *v == 230 << 20), "never the stale 150 MiB: {after:?}");
    let warned =
        store.events_since(0, 10_000).unwrap().into_iter().any(|e| e.topic.ends_with("quota.warning") && e.data["resource"] == "memory");
    assert!(warned, "the soft limit was crossed, and seen");
}
