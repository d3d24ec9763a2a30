//! Groups created or changed through the API are stored (migration 4) as
//! `StoredGroup` DTOs: they round-trip to equal core groups, a database of
//! schema 3 gains the table with its data kept, deletion deletes, and a
//! stored group that no longer converts names the field at fault.
#![allow(clippy::unwrap_used)]

use allot_core::group::{CustomHandler, ScalingPolicy, builtin_groups};
use allot_core::limits::{Action, Limit, LimitOverride};
use allot_core::quantity::Window;
use allot_core::{QuotaGroup, Resource};
use allot_store::Store;
use allot_store::dto::{StoredGroup, StoredOverride, overrides_from_core, overrides_to_core};
use std::collections::BTreeMap;
use std::time::Duration;

fn tiny() -> QuotaGroup {
    let mut g = builtin_groups().remove(0);
    g.name = "tiny".into();
    g.description = "small ones".into();
    g.scaling_policy = ScalingPolicy::Proportional;
    g.limits.insert(
        Resource::Memory,
        Limit { burst: 120_000_000, burst_window: Duration::from_secs(5), ..Limit::new(40_000_000, 80_000_000, Action::Custom) },
    );
    let mut tokens = Limit::new(500, 1000, Action::Suspend);
    tokens.window = Some(Window::Hour);
    g.limits.insert(Resource::Custom("tokens".into()), tokens);
    g.totals.insert(Resource::Cpu, 1500);
    g.custom_handler = Some(CustomHandler::Url("http://127.0.0.1:9/h".into()));
    g
}

#[test]
fn stored_groups_round_trip_and_deleting_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let g = tiny();
    {
        let s = Store::open(&path).unwrap();
        assert!(s.groups().unwrap().is_empty());
        s.put_group(&StoredGroup::from_core(&g), 1000).unwrap();
        let mut changed = g.clone();
        changed.totals.insert(Resource::Memory, 7);
        s.put_group(&StoredGroup::from_core(&changed), 2000).unwrap();
        s.put_group(&StoredGroup::from_core(&builtin_groups()[1]), 2000).unwrap();
    }
    let s = Store::open(&path).unwrap();
    let stored = s.groups().unwrap();
    assert_eq!(stored.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["standard_agent", "tiny"], "one row per group, by name");
    let back = stored[1].to_core().unwrap();
    assert_eq!(back.totals[&Resource::Memory], 7, "the later change replaced the earlier");
    let mut expected = g;
    expected.totals.insert(Resource::Memory, 7);
    assert_eq!(back, expected, "every field comes back");
    assert_eq!(stored[0].to_core().unwrap(), builtin_groups()[1]);
    assert!(s.delete_group("tiny").unwrap());
    assert!(!s.delete_group("tiny").unwrap(), "nothing left to delete");
    assert_eq!(s.groups().unwrap().len(), 1);
}

#[test]
fn a_schema_3_database_gains_the_groups_table_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let old = Store::open_at_version(&path, 3).unwrap();
        assert!(!old.has_table("groups").unwrap());
        old.append_event(1, "x", None, &serde_json::json!({})).unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert!(s.has_table("groups").unwrap());
    assert_eq!(s.last_seq().unwrap(), 1);
}

#[test]
fn a_stored_group_that_does_not_convert_names_the_field() {
    let mut g = StoredGroup::from_core(&tiny());
    g.scaling_policy = "elastic".into();
    assert!(g.to_core().unwrap_err().to_string().starts_with("scaling_policy: unknown scaling policy \"elastic\""));
    let mut g = StoredGroup::from_core(&tiny());
    g.limits.get_mut("memory").unwrap().action = "explode".into();
    assert!(g.to_core().unwrap_err().to_string().starts_with("limits.memory.action: unknown action"));
    let mut g = StoredGroup::from_core(&tiny());
    g.custom_handler = None;
    assert!(g.to_core().unwrap_err().to_string().contains("no custom_handler"), "validated as a group");
    let mut g = StoredGroup::from_core(&tiny());
    g.name = "Bad Name".into();
    assert!(g.to_core().unwrap_err().to_string().starts_with("name: invalid group name"));
}

#[test]
fn overrides_are_stored_field_by_field() {
    let mut o = BTreeMap::new();
    o.insert(Resource::Memory, LimitOverride { hard: Some(120 << 20), ..Default::default() });
    o.insert(
        Resource::Custom("tokens".into()),
        LimitOverride {
            soft: Some(5),
            burst_window: Some(Duration::from_secs(9)),
            action: Some(Action::Warn),
            window: Some(Window::Day),
            ..Default::default()
        },
    );
    let stored = overrides_from_core(&o);
    assert_eq!(stored["memory"], StoredOverride { hard: Some(120 << 20), ..Default::default() });
    assert_eq!(serde_json::to_value(&stored["memory"]).unwrap(), serde_json::json!({"hard": 125_829_120}), "only the fields given");
    assert_eq!(overrides_to_core(&stored).unwrap(), o);
    let mut bad = stored;
    bad.get_mut("memory").unwrap().window = Some("week".into());
    assert!(overrides_to_core(&bad).unwrap_err().to_string().starts_with("overrides.memory.window: unknown window"));
}

/// Issue 12: a group's budgets (its totals on custom resources, with their
/// windows) are stored with it, so a group made through the API keeps them
/// across a restart; rows of earlier versions (no `budgets`, a custom total
/// without a window) still load.
#[test]
fn group_budgets_are_stored_with_their_windows_and_earlier_rows_load() {
    use allot_core::budget::text::{parse_budget, parse_budget_str};
    let tokens = Resource::Custom("tokens".into());
    let usd = Resource::Custom("usd_micros".into());
    let mut g = tiny();
    g.budgets.insert(tokens.clone(), parse_budget_str("t", &tokens, "5M/day").unwrap());
    let text = allot_core::budget::text::BudgetText {
        hard: "50M".into(),
        soft: Some("40M".into()),
        calendar: Some("month".into()),
        day: Some(3),
        at: Some("06:30".into()),
        tz: Some("+02:00".into()),
        on_expiry: Some("release".into()),
        ..Default::default()
    };
    g.budgets.insert(usd.clone(), parse_budget("u", &usd, &text).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap().put_group(&StoredGroup::from_core(&g), 1000).unwrap();
    let stored = Store::open(&path).unwrap().groups().unwrap();
    let json = serde_json::to_value(&stored[0]).unwrap();
    assert_eq!(
        json["budgets"]["tokens"],
        serde_json::json!({"hard": 5_000_000, "window": {"kind": "rolling", "length_ms": 86_400_000, "buckets": 60}, "on_expiry": "charge"})
    );
    assert_eq!(stored[0].to_core().unwrap(), g, "every budget comes back, window and all");

    // A row of an earlier version: no budgets, a total on tokens without a window (a bare count: per minute).
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("budgets");
    old["totals"]["tokens"] = serde_json::json!(9000);
    let back = serde_json::from_value::<StoredGroup>(old).unwrap().to_core().unwrap();
    assert_eq!(back.budgets[&tokens], allot_core::budget::BudgetSpec::rolling(9000, Window::Minute));
    assert!(!back.totals.contains_key(&tokens), "totals keep the kernel resources");
    assert_eq!(back.totals, g.totals);

    // A budget that does not convert names its field.
    let mut bad = json.clone();
    bad["budgets"]["usd_micros"]["window"]["day"] = serde_json::json!(31);
    let e = serde_json::from_value::<StoredGroup>(bad).unwrap().to_core().unwrap_err().to_string();
    assert!(e.starts_with("budgets.usd_micros.window: reset on day 31 of the month"), "{e}");
    let mut bad = json.clone();
    bad["budgets"]["memory"] = bad["budgets"]["tokens"].clone();
    let e = serde_json::from_value::<StoredGroup>(bad).unwrap().to_core().unwrap_err().to_string();
    assert!(e.starts_with("budgets.memory: memory is not a custom resource"), "{e}");
    let mut bad = json;
    bad["budgets"]["tokens"]["on_expiry"] = serde_json::json!("keep");
    let e = serde_json::from_value::<StoredGroup>(bad).unwrap().to_core().unwrap_err().to_string();
    assert!(e.starts_with("budgets.tokens.on_expiry:"), "{e}");
}
