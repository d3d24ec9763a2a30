//! The state database: migrations, WAL, events and history round trips,
//! concurrent readers, and nothing lost across reopening.
#![allow(clippy::unwrap_used)]

use allot_store::{AgentStateName, NewEnforcement, Outcome, Stage, Store, StoreError, StoredAgent};
use serde_json::{Value, json};

/// A done, successful enforcement record of `action` on `resource`.
fn done<'a>(agent: &'a str, resource: &'a str, action: &'a str, data: &'a Value) -> NewEnforcement<'a> {
    NewEnforcement { seq: None, at_ms: 1, agent, resource, action, stage: Stage::Done, outcome: Outcome::Success, detail: "", data }
}

#[test]
fn migrates_once_uses_wal_and_keeps_sequence_numbers_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), Store::SCHEMA_VERSION);
        assert_eq!(Store::SCHEMA_VERSION, 5);
        assert_eq!(s.journal_mode().unwrap(), "wal");
        assert!(s.has_table("events").unwrap() && s.has_table("rollups").unwrap());
        assert_eq!(s.append_event(1000, "resource_management.agent.started", Some("a"), &json!({"pid": 7})).unwrap(), 1);
        assert_eq!(s.append_event(2000, "resource_management.quota.warning", Some("a"), &json!({})).unwrap(), 2);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), Store::SCHEMA_VERSION, "no migration twice");
    assert_eq!(s.last_seq().unwrap(), 2);
    assert_eq!(s.append_event(3000, "x", None, &json!(null)).unwrap(), 3, "sequence continues");
    let ev = s.events_since(1, 10).unwrap();
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(ev[0].topic, "resource_management.quota.warning");
}

#[test]
fn enforcement_history_keeps_real_outcomes_and_refuses_made_up_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    let data = json!({"factor": 0.5});
    let throttle =
        NewEnforcement { seq: Some(1), at_ms: 10, detail: "wrote 20000 to cpu.cfs_quota_us", ..done("a", "cpu", "throttle", &data) };
    assert_eq!(s.record_enforcement(&throttle).unwrap(), 1);
    let empty = json!({});
    let suspend =
        NewEnforcement { at_ms: 20, outcome: Outcome::Failure, detail: "cannot write FROZEN", ..done("b", "memory", "suspend", &empty) };
    s.record_enforcement(&suspend).unwrap();
    let scheduled = NewEnforcement { at_ms: 30, stage: Stage::Scheduled, ..done("a", "memory", "suspend", &empty) };
    s.record_enforcement(&scheduled).unwrap();
    let all = s.history(None).unwrap();
    assert_eq!(all.len(), 3);
    let a = s.history(Some("a")).unwrap();
    assert_eq!((a[0].seq, a[0].at_ms, a[0].detail.as_str(), &a[0].decision), (Some(1), 10, "wrote 20000 to cpu.cfs_quota_us", &data));
    assert_eq!((a[0].action.as_str(), a[0].outcome.as_str(), a[0].stage), ("throttle", "success", Stage::Done));
    assert_eq!((a[1].action.as_str(), a[1].stage), ("suspend (scheduled)", Stage::Scheduled), "the display name carries the stage");
    assert_eq!(all[1].outcome, "failure");
    // The record as the API serves it: the display action and the stage beside it.
    let v = serde_json::to_value(&a[1]).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["stage"].as_str(), v["outcome"].as_str()),
        (Some("suspend (scheduled)"), Some("scheduled"), Some("success"))
    );
    // Outcomes and stages the types cannot express are refused by the schema too.
    let c = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    let insert = "INSERT INTO enforcement (at_ms, agent, resource, action, stage, outcome, detail, decision) VALUES (1, 'a', 'cpu', 'warn', ?1, ?2, '', '{}')";
    assert!(c.execute(insert, ["done", "assumed"]).is_err(), "outcome is checked");
    assert!(c.execute(insert, ["later", "success"]).is_err(), "stage is checked");
    assert!(c.execute(insert, ["done", "success"]).is_ok());
}

#[test]
fn agents_rollups_and_a_reader_beside_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut w = Store::open(&path).unwrap();
    let a = StoredAgent {
        id: "a".into(),
        group: "standard_agent".into(),
        state: "running".into(),
        pid: Some(42),
        cgroup: json!(["/sys/fs/cgroup/memory/allot/g/a"]),
        spec: json!({"command": ["sleep", "1"]}),
        exit: None,
        updated_ms: 5,
    };
    w.put_agent(&a).unwrap();
    w.set_agent_state("a", AgentStateName::Exited, Some("exit status 0"), 9).unwrap();
    let r = Store::open_read_only(&path).unwrap();
    let got = r.agent("a").unwrap().unwrap();
    assert_eq!((got.state.as_str(), got.exit.as_deref(), got.pid), ("exited", Some("exit status 0"), Some(42)));
    assert_eq!(got.state_name().unwrap(), AgentStateName::Exited);
    assert_eq!(got.cgroup_dirs(), [std::path::PathBuf::from("/sys/fs/cgroup/memory/allot/g/a")]);
    w.set_agent_state("a", AgentStateName::Restarting, None, 10).unwrap();
    let got = r.agent("a").unwrap().unwrap();
    assert_eq!((got.state.as_str(), got.exit.as_deref()), ("restarting", Some("exit status 0")), "no exit given: the old one is kept");
    let roll = allot_store::rollup::summarize(3, &[1, 2, 3]).unwrap();
    w.put_rollup("a", "cpu", &roll).unwrap();
    assert_eq!(r.rollups("a", "cpu", 0).unwrap(), [roll]);
    // A failed transaction leaves nothing behind.
    let res: Result<(), _> = w.transaction(|s| {
        s.append_event(1, "t", None, &json!(1))?;
        s.record_enforcement(&done("a", "cpu", "warn", &json!({})))?;
        Err(StoreError::Dir { path: "abort".into(), source: std::io::Error::other("abort") })
    });
    assert!(res.is_err());
    assert_eq!(r.last_seq().unwrap(), 0);
    assert!(r.history(None).unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = Store::open(&path).unwrap_err().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[test]
fn samples_and_analyses_are_kept_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    s.put_samples(&[("a".into(), "cpu".into(), 1000, 5), ("a".into(), "cpu".into(), 2000, 7), ("b".into(), "cpu".into(), 1500, 9)])
        .unwrap();
    assert_eq!(s.samples("a", "cpu", 0).unwrap(), [(1000, 5), (2000, 7)]);
    assert_eq!(s.samples("a", "cpu", 1500).unwrap(), [(2000, 7)]);
    assert_eq!(s.sampled_resources("b").unwrap(), ["cpu"]);
    s.put_analysis("a", "cpu", 10, &json!({"pattern": "steady"}), Some(&json!({"kind": "decrease_quota"}))).unwrap();
    s.put_analysis("b", "cpu", 11, &json!({"pattern": "growing"}), None).unwrap();
    s.put_analysis("a", "cpu", 12, &json!({"pattern": "bursty"}), None).unwrap();
    let all = s.analyses(None).unwrap();
    assert_eq!(all.len(), 2, "one row per agent and resource; b's run did not erase a's");
    assert_eq!(all[0].3["pattern"], "bursty");
    assert_eq!(all[0].4, None, "the recommendation belongs to the latest analysis, which had none");
    s.put_analysis("a", "cpu", 13, &json!({"pattern": "steady"}), Some(&json!({"kind": "decrease_quota"}))).unwrap();
    assert_eq!(s.analyses(Some("a")).unwrap()[0].4.as_ref().unwrap()["kind"], "decrease_quota");
    assert_eq!(s.prune_samples(1600).unwrap(), 2);
}

#[test]
fn a_new_state_database_and_its_wal_are_readable_by_their_owner_only() {
    // Found by the hostile check of issue 11: state.db was 0644, so an agent running as
    // another user could read every agent's samples and history the API keeps from it.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    store.put_samples(&[("a".into(), "memory".into(), 1, 2)]).unwrap();
    for p in [path.clone(), dir.path().join("state.db-wal")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
    }
    assert_eq!(store.readable_by_others(), None);
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.readable_by_others(), Some(0o644), "an existing file is left as it is, and said");
}

/// With checkpoints handed to a thread of their own, the writer's commits
/// never move the log into the database file; the thread does, so the file
/// holds what was written while the store is still open, and the log does
/// not grow without end. Without the thread (and automatic checkpoints off
/// the same way) the file would stay as it was created.
#[test]
fn background_checkpoints_move_the_log_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let empty = std::fs::metadata(&path).unwrap().len();
    let cp = store.checkpoint_in_background(std::time::Duration::from_millis(20)).unwrap();
    let batch: Vec<(String, String, u64, u64)> = (0..20_000u64).map(|i| (format!("agent{}", i % 500), "memory".into(), i, i)).collect();
    for part in batch.chunks(128) {
        store.put_samples(part).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = || std::fs::metadata(&path).unwrap().len() > empty + (512 << 10);
    while !grown() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(grown(), "the database file is still {} bytes", std::fs::metadata(&path).unwrap().len());
    assert_eq!(cp.take_error(), None);
    drop(cp);
    assert_eq!(store.samples("agent7", "memory", 0).unwrap().len(), 40);
}

/// A batch is one transaction: a reader sees none of its writes until its
/// end, then all of them; writes that are all or nothing on their own
/// (samples, a transaction) nest in it as savepoints.
#[test]
fn a_batch_is_one_transaction_and_nested_writes_are_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut w = Store::open(&path).unwrap();
    let r = Store::open_read_only(&path).unwrap();
    assert!(w.begin_batch().unwrap());
    assert!(!w.begin_batch().unwrap(), "one batch at a time");
    w.append_event(1, "a", None, &json!(1)).unwrap();
    w.put_samples(&[("a".into(), "memory".into(), 1, 5)]).unwrap();
    let failed: Result<(), StoreError> = w.transaction(|s| {
        s.append_event(2, "rolled back", None, &json!(2))?;
        Err(StoreError::Locked { path: "x".into(), pid: None })
    });
    assert!(failed.is_err());
    w.transaction(|s| s.append_event(3, "kept", None, &json!(3)).map(drop)).unwrap();
    assert_eq!(r.last_seq().unwrap(), 0, "nothing visible before the end");
    w.end_batch().unwrap();
    let topics: Vec<String> = r.events_since(0, 10).unwrap().into_iter().map(|e| e.topic).collect();
    assert_eq!(topics, ["a", "kept"]);
    assert_eq!(r.samples("a", "memory", 0).unwrap(), [(1, 5)]);
    assert!(w.begin_batch().unwrap(), "a new batch after the end");
    w.end_batch().unwrap();
}
