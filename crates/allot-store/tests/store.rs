//! The state database: migrations, WAL, events and history round trips,
//! concurrent readers, and nothing lost across reopening.
#![allow(clippy::unwrap_used)]

use allot_store::{Store, StoredAgent};
use serde_json::json;

#[test]
fn migrates_once_uses_wal_and_keeps_sequence_numbers_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.db");
    {
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 2);
        assert_eq!(s.journal_mode().unwrap(), "wal");
        assert!(s.has_table("events").unwrap() && s.has_table("rollups").unwrap());
        assert_eq!(s.append_event(1000, "resource_management.agent.started", Some("a"), &json!({"pid": 7})).unwrap(), 1);
        assert_eq!(s.append_event(2000, "resource_management.quota.warning", Some("a"), &json!({})).unwrap(), 2);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), 2, "no migration twice");
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
    s.record_enforcement(Some(1), 10, "a", "cpu", "throttle", "success", "wrote 20000 to cpu.cfs_quota_us", &json!({"factor": 0.5}))
        .unwrap();
    s.record_enforcement(None, 20, "b", "memory", "suspend", "failure", "cannot write FROZEN", &json!({})).unwrap();
    let all = s.history(None).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(s.history(Some("a")).unwrap()[0].detail, "wrote 20000 to cpu.cfs_quota_us");
    assert!(s.record_enforcement(None, 1, "a", "cpu", "warn", "assumed", "", &json!({})).is_err(), "outcome is checked");
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
    w.set_agent_state("a", "exited", Some("exit status 0"), 9).unwrap();
    let r = Store::open_read_only(&path).unwrap();
    let got = r.agent("a").unwrap().unwrap();
    assert_eq!((got.state.as_str(), got.exit.as_deref(), got.pid), ("exited", Some("exit status 0"), Some(42)));
    let roll = allot_store::rollup::summarize(3, &[1, 2, 3]).unwrap();
    w.put_rollup("a", "cpu", &roll).unwrap();
    assert_eq!(r.rollups("a", "cpu", 0).unwrap(), [roll]);
    // A failed transaction leaves nothing behind.
    let res: Result<(), _> = w.transaction(|s| {
        s.append_event(1, "t", None, &json!(1))?;
        s.record_enforcement(None, 1, "a", "cpu", "warn", "bogus", "", &json!({}))?;
        Ok(())
    });
    assert!(res.is_err());
    assert_eq!(r.last_seq().unwrap(), 0);
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
    assert_eq!(all[0].4.as_ref().unwrap()["kind"], "decrease_quota", "kept until replaced");
    assert_eq!(s.prune_samples(1600).unwrap(), 2);
}
