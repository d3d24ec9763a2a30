//! Typed enforcement records: the migration that splits the stage out of
//! the action of older rows, open escalations and counts by query, and the
//! names of outcomes, stages and agent states.
#![allow(clippy::unwrap_used)]

use allot_store::{AgentStateName, NewEnforcement, Outcome, Stage, Store};
use serde_json::{Value, json};

fn record(s: &Store, agent: &str, resource: &str, action: &str, stage: Stage, outcome: Outcome) {
    let data = Value::Null;
    s.record_enforcement(&NewEnforcement { seq: None, at_ms: 1, agent, resource, action, stage, outcome, detail: "", data: &data })
        .unwrap();
}

#[test]
fn the_migration_splits_scheduled_rows_of_an_older_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = Store::open_at_version(&path, 2).unwrap();
    assert_eq!(old.schema_version().unwrap(), 2);
    drop(old);
    // Rows as version 2 wrote them: the stage was part of the action's text.
    let c = rusqlite::Connection::open(&path).unwrap();
    for (agent, resource, action, outcome) in [
        ("a", "cpu", "throttle (scheduled)", "success"),
        ("a", "cpu", "throttle", "success"),
        ("a", "memory", "suspend (scheduled)", "success"),
        ("b", "processes", "terminate (scheduled)", "success"),
        ("b", "processes", "terminate", "cancelled"),
        ("b", "cpu", "warn", "success"),
    ] {
        c.execute(
            "INSERT INTO enforcement (at_ms, agent, resource, action, outcome, detail, decision) VALUES (1, ?1, ?2, ?3, ?4, 'd', '{}')",
            [agent, resource, action, outcome],
        )
        .unwrap();
    }
    drop(c);

    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), Store::SCHEMA_VERSION);
    let h = s.history(None).unwrap();
    let shown: Vec<_> = h.iter().map(|r| (r.action.as_str(), r.stage)).collect();
    assert_eq!(
        shown,
        [
            ("throttle (scheduled)", Stage::Scheduled),
            ("throttle", Stage::Done),
            ("suspend (scheduled)", Stage::Scheduled),
            ("terminate (scheduled)", Stage::Scheduled),
            ("terminate", Stage::Done),
            ("warn", Stage::Done),
        ],
        "the display names are what they were"
    );
    let c = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = c.prepare("SELECT action, stage FROM enforcement ORDER BY id").unwrap();
    let raw: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(raw[0], ("throttle".to_owned(), "scheduled".to_owned()), "the column holds the bare action");
    assert_eq!(raw[5], ("warn".to_owned(), "done".to_owned()));
    assert_eq!(s.open_escalations("a").unwrap(), [("memory".to_owned(), "suspend".to_owned())]);
    assert!(s.open_escalations("b").unwrap().is_empty());
    drop(s);
    assert_eq!(Store::open(&path).unwrap().history(None).unwrap(), h, "reopening migrates nothing twice");
}

#[test]
fn open_escalations_are_those_never_carried_out_nor_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    assert!(s.open_escalations("a").unwrap().is_empty());
    // Scheduled, then done: closed.
    record(&s, "a", "cpu", "suspend", Stage::Scheduled, Outcome::Success);
    record(&s, "a", "cpu", "suspend", Stage::Done, Outcome::Success);
    assert!(s.open_escalations("a").unwrap().is_empty());
    // Scheduled without a done row: open.
    record(&s, "a", "memory", "terminate", Stage::Scheduled, Outcome::Success);
    assert_eq!(s.open_escalations("a").unwrap(), [("memory".to_owned(), "terminate".to_owned())]);
    // Two resources; a done row of another action, resource or agent closes nothing.
    record(&s, "a", "processes", "suspend", Stage::Scheduled, Outcome::Success);
    record(&s, "a", "memory", "suspend", Stage::Done, Outcome::Success);
    record(&s, "a", "cpu", "terminate", Stage::Done, Outcome::Success);
    record(&s, "b", "memory", "terminate", Stage::Done, Outcome::Success);
    let open = [("memory".to_owned(), "terminate".to_owned()), ("processes".to_owned(), "suspend".to_owned())];
    assert_eq!(s.open_escalations("a").unwrap(), open);
    assert!(s.open_escalations("b").unwrap().is_empty(), "per agent");
    // Scheduled again: still one open escalation, not two.
    record(&s, "a", "memory", "terminate", Stage::Scheduled, Outcome::Success);
    assert_eq!(s.open_escalations("a").unwrap(), open);
    // Cancelled or failed closes it as well as carried out does.
    record(&s, "a", "memory", "terminate", Stage::Done, Outcome::Cancelled);
    record(&s, "a", "processes", "suspend", Stage::Done, Outcome::Failure);
    assert!(s.open_escalations("a").unwrap().is_empty());
    // A done row before the schedule does not close it.
    record(&s, "a", "cpu", "suspend", Stage::Scheduled, Outcome::Success);
    assert_eq!(s.open_escalations("a").unwrap(), [("cpu".to_owned(), "suspend".to_owned())]);
}

#[test]
fn counts_are_of_done_records_by_agent_action_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    assert!(s.enforcement_counts().unwrap().is_empty());
    record(&s, "a", "cpu", "throttle", Stage::Done, Outcome::Success);
    record(&s, "a", "memory", "throttle", Stage::Done, Outcome::Success);
    record(&s, "a", "cpu", "throttle", Stage::Done, Outcome::Fallback);
    record(&s, "a", "cpu", "suspend", Stage::Scheduled, Outcome::Success);
    record(&s, "a", "cpu", "suspend", Stage::Done, Outcome::Cancelled);
    record(&s, "b", "cpu", "warn", Stage::Done, Outcome::Success);
    let counts = s.enforcement_counts().unwrap();
    let want = [
        ("a", "suspend", Outcome::Cancelled, 1),
        ("a", "throttle", Outcome::Fallback, 1),
        ("a", "throttle", Outcome::Success, 2),
        ("b", "warn", Outcome::Success, 1),
    ];
    let got: Vec<_> = counts.iter().map(|(a, act, o, n)| (a.as_str(), act.as_str(), *o, *n)).collect();
    assert_eq!(got, want, "scheduled records are not counted");
}

#[test]
fn names_parse_and_errors_name_the_value() {
    for o in Outcome::ALL {
        assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
        assert_eq!(o.to_string(), o.as_str());
        assert_eq!(serde_json::to_value(o).unwrap(), json!(o.as_str()), "serde writes the same name");
    }
    for st in Stage::ALL {
        assert_eq!(st.as_str().parse::<Stage>().unwrap(), *st);
        assert_eq!(serde_json::to_value(st).unwrap(), json!(st.as_str()));
    }
    for st in AgentStateName::ALL {
        assert_eq!(st.as_str().parse::<AgentStateName>().unwrap(), *st);
        assert_eq!(serde_json::to_value(st).unwrap(), json!(st.as_str()));
    }
    let e = "assumed".parse::<Outcome>().unwrap_err();
    assert_eq!(e.to_string(), r#"unknown outcome "assumed": expected one of success, failure, cancelled, fallback"#);
    assert_eq!(e.value, "assumed");
    let e = "later".parse::<Stage>().unwrap_err();
    assert_eq!(e.to_string(), r#"unknown stage "later": expected one of scheduled, done"#);
    let e = "Running".parse::<AgentStateName>().unwrap_err().to_string();
    assert!(e.starts_with(r#"unknown agent state "Running": expected one of starting, running, throttled"#), "{e}");
    assert_eq!(AgentStateName::ALL.len(), 7);
}
