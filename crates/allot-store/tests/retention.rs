//! The exclusive lock of a writer, and retention: each table keeps what is
//! inside its window and loses what is older, in bounded batches; the size
//! cap deletes the oldest rows of the largest history table; open
//! escalations and agents that have not exited are never deleted; the file
//! shrinks.
#![allow(clippy::unwrap_used)]

use allot_store::{AgentStateName, NewEnforcement, Outcome, Retention, Stage, Store, StoreError, StoredAgent};
use serde_json::{Value, json};
use std::time::Duration;

const DAY: u64 = 86_400_000;
/// "Now" in the tests: day 1000 after the epoch.
const NOW: u64 = 1000 * DAY;

fn rec<'a>(agent: &'a str, action: &'a str, stage: Stage, at_ms: u64, data: &'a Value) -> NewEnforcement<'a> {
    NewEnforcement { seq: None, at_ms, agent, resource: "memory", action, stage, outcome: Outcome::Success, detail: "d", data }
}

fn agent(id: &str, state: AgentStateName, updated_ms: u64) -> StoredAgent {
    StoredAgent {
        id: id.into(),
        group: "standard_agent".into(),
        state: state.as_str().into(),
        pid: None,
        cgroup: json!([]),
        spec: json!({}),
        exit: None,
        updated_ms,
    }
}

fn samples(s: &mut Store, agent: &str, times: impl Iterator<Item = u64>) {
    let batch: Vec<_> = times.map(|t| (agent.to_owned(), "memory".to_owned(), t, 7)).collect();
    s.put_samples(&batch).unwrap();
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[test]
fn a_second_writer_is_refused_naming_the_file_and_the_holder_while_readers_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = Store::open(&path).unwrap();
    first.append_event(1, "t", None, &json!(1)).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()), "{err:?}");
    assert_eq!(err.to_string(), format!("{} is in use by another allot (pid {})", path.display(), std::process::id()));
    assert!(Store::open_at_version(&path, 1).is_err(), "every opening for writing takes the lock");
    // Readers take no lock.
    assert_eq!(Store::open_read_only(&path).unwrap().last_seq().unwrap(), 1);
    assert_eq!(std::fs::read_to_string(Store::lock_path(&path)).unwrap().trim(), std::process::id().to_string());
    // The lock lives as long as the store.
    drop(first);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.last_seq().unwrap(), 1, "nothing lost");
}

#[test]
fn rows_older_than_their_window_go_and_newer_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut s = Store::open(&path).unwrap();
    // Samples every hour over the last 48 h: those older than 24 h go.
    samples(&mut s, "a", (0..48).map(|h| NOW - 48 * 3_600_000 + h * 3_600_000));
    // Rollups: one a day for 40 days, kept 30.
    let roll = allot_store::rollup::summarize(0, &[1]).unwrap();
    for d in 0..40 {
        let minute = (NOW - (40 - d) * DAY) / 60_000;
        s.put_rollup("a", "memory", &allot_store::rollup::Rollup { minute, ..roll.clone() }).unwrap();
    }
    // Events and enforcement one a day for 100 days.
    let data = json!({});
    for d in 0..100 {
        s.append_event(NOW - (100 - d) * DAY, "t", Some("a"), &data).unwrap();
        s.record_enforcement(&rec("a", "warn", Stage::Done, NOW - (100 - d) * DAY, &data)).unwrap();
    }
    // Agents: one running since long ago, one exited 10 days ago, one exited yesterday.
    s.put_agent(&agent("live", AgentStateName::Running, NOW - 60 * DAY)).unwrap();
    s.put_agent(&agent("old", AgentStateName::Exited, NOW - 10 * DAY)).unwrap();
    s.put_agent(&agent("recent", AgentStateName::Exited, NOW - DAY)).unwrap();
    // Analyses 40 days old: the running agent's is kept, the exited one's goes.
    for a in ["live", "old"] {
        s.put_analysis(a, "memory", NOW - 40 * DAY, &json!({"pattern": "steady"}), None).unwrap();
    }

    let r = s.prune(&Retention::default(), NOW).unwrap();
    assert_eq!((r.samples, r.rollups, r.events, r.enforcement, r.analyses, r.agents), (24, 10, 70, 10, 1, 1), "{r:?}");
    assert!(!r.more && r.for_size == 0, "{r:?}");
    let left = s.samples("a", "memory", 0).unwrap();
    assert_eq!(left.len(), 24);
    assert!(left.iter().all(|(t, _)| *t >= NOW - DAY), "{left:?}");
    assert!(s.rollups("a", "memory", 0).unwrap().iter().all(|r| r.minute * 60_000 >= NOW - 30 * DAY));
    assert!(s.events_since(0, 1000).unwrap().iter().all(|e| e.at_ms >= NOW - 30 * DAY));
    assert_eq!(s.history(None).unwrap().len(), 90);
    let ids: Vec<String> = s.agents().unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["live", "recent"], "the running agent stays, however old its row");
    assert_eq!(s.analyses(None).unwrap().iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["live"]);
    // A second call finds nothing more.
    assert_eq!(s.prune(&Retention::default(), NOW).unwrap().total(), 0);
}

#[test]
fn one_call_deletes_at_most_a_batch_per_table_and_says_more_remains() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    samples(&mut s, "a", 0..2_500);
    let r = Retention { batch: 1_000, ..Retention::default() };
    let sizes: Vec<(usize, bool)> = (0..4).map(|_| s.prune(&r, NOW).unwrap()).map(|r| (r.samples, r.more)).collect();
    assert_eq!(sizes, [(1_000, true), (1_000, true), (500, false), (0, false)]);
    assert!(s.samples("a", "memory", 0).unwrap().is_empty());
}

#[test]
fn open_escalations_are_kept_and_no_closed_one_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let data = json!({});
    let old = NOW - 200 * DAY;
    // a: a terminate announced long ago and still open.
    s.record_enforcement(&rec("a", "terminate", Stage::Scheduled, old, &data)).unwrap();
    // b: a suspend announced long ago and carried out long ago: both go.
    s.record_enforcement(&rec("b", "suspend", Stage::Scheduled, old, &data)).unwrap();
    s.record_enforcement(&rec("b", "suspend", Stage::Done, old + 1, &data)).unwrap();
    // c: announced long ago, carried out recently: the announcement goes, the act stays.
    s.record_enforcement(&rec("c", "throttle", Stage::Scheduled, old, &data)).unwrap();
    for i in 0..5 {
        s.record_enforcement(&rec("z", "warn", Stage::Done, old + i, &data)).unwrap();
    }
    s.record_enforcement(&rec("c", "throttle", Stage::Done, NOW - DAY, &data)).unwrap();
    let r = s.prune(&Retention { batch: 2, ..Retention::default() }, NOW).unwrap();
    assert_eq!((r.enforcement, r.more), (2, true), "{r:?}");
    while s.prune(&Retention { batch: 2, ..Retention::default() }, NOW).unwrap().more {}
    assert_eq!(s.open_escalations("a").unwrap(), [("memory".to_owned(), "terminate".to_owned())]);
    assert!(s.open_escalations("b").unwrap().is_empty() && s.open_escalations("c").unwrap().is_empty());
    let left: Vec<(String, String)> = s.history(None).unwrap().into_iter().map(|r| (r.agent, r.action)).collect();
    assert_eq!(left, [("a".to_owned(), "terminate (scheduled)".to_owned()), ("c".to_owned(), "throttle".to_owned())]);
    // The size cap spares it too: with a cap of one byte everything else goes, the open escalation stays.
    let tiny = Retention { max_size: Some(1), ..Retention::default() };
    for _ in 0..10 {
        s.prune(&tiny, NOW).unwrap();
    }
    assert_eq!(s.open_escalations("a").unwrap().len(), 1);
    assert_eq!(s.history(None).unwrap().len(), 1);
}

#[test]
fn the_size_cap_deletes_the_oldest_rows_of_the_largest_table_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut s = Store::open(&path).unwrap();
    // Recent rows only (no age pruning): 60,000 samples and 200 events.
    samples(&mut s, "a", (0..60_000).map(|i| NOW - 60_000 + i));
    let data = json!({"note": "x".repeat(100)});
    for i in 0..200 {
        s.append_event(NOW - 1000 + i, "t", Some("a"), &data).unwrap();
    }
    let before = s.used_bytes().unwrap();
    let cap = before * 3 / 4;
    let r = Retention { max_size: Some(cap), ..Retention::default() };
    let mut calls = 0;
    loop {
        let rep = s.prune(&r, NOW).unwrap();
        calls += 1;
        assert!(rep.samples <= r.batch, "{rep:?}");
        assert_eq!(rep.events, 0, "the events table is not the largest: {rep:?}");
        if !rep.more {
            break;
        }
        assert!(calls < 100, "the cap is reached: {rep:?}");
    }
    assert!(s.used_bytes().unwrap() <= cap, "{} > {cap}", s.used_bytes().unwrap());
    let left = s.samples("a", "memory", 0).unwrap();
    assert!(left.len() < 60_000 && !left.is_empty());
    assert_eq!(left.last().unwrap().0, NOW - 1, "the newest are kept; the oldest went");
    assert_eq!(left[0].0, NOW - 60_000 + (60_000 - left.len() as u64));
    assert_eq!(count(&path, "events"), 200);
}

#[test]
fn the_file_shrinks_after_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut s = Store::open(&path).unwrap();
    assert!(s.shrinks().unwrap(), "a new database is in incremental auto_vacuum");
    samples(&mut s, "a", 0..50_000);
    let checkpoint = |p: &std::path::Path| {
        rusqlite::Connection::open(p).unwrap().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    };
    checkpoint(&path);
    let full = std::fs::metadata(&path).unwrap().len();
    let r = Retention { batch: 100_000, ..Retention::default() };
    let rep = s.prune(&r, NOW).unwrap();
    assert_eq!(rep.samples, 50_000);
    assert!(rep.vacuumed_pages > 0, "{rep:?}");
    checkpoint(&path);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < full / 2, "{full} -> {after} bytes");
}

#[test]
fn an_older_database_is_switched_to_incremental_vacuum_without_losing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // As an earlier allot left it: auto_vacuum none.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE keep (x INTEGER); INSERT INTO keep VALUES (1), (2);").unwrap();
    assert_eq!(c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    drop(c);
    let s = Store::open(&path).unwrap();
    assert!(s.shrinks().unwrap());
    drop(s);
    assert_eq!(count(&path, "keep"), 2);
}

#[test]
fn zero_windows_and_no_cap_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    samples(&mut s, "a", [NOW - 1, NOW].into_iter());
    let r = Retention { samples: Duration::ZERO, max_size: None, batch: 0, ..Retention::default() };
    // A zero window keeps nothing older than now; a batch of 0 counts as 1.
    assert_eq!(s.prune(&r, NOW).unwrap().samples, 1);
    assert_eq!(s.samples("a", "memory", 0).unwrap(), [(NOW, 7)]);
}
