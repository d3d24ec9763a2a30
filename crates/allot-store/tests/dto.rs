//! The stored shapes of quotas and specs: what earlier versions wrote still
//! loads and converts back to the same core quota, and a wrong field is named.
#![allow(clippy::unwrap_used)]

use allot_core::group::CustomHandler;
use allot_core::limits::{Action, Limit, LimitOverride};
use allot_core::quantity::Window;
use allot_core::{AgentId, Priority, Quota, Resource};
use allot_store::StoredAgent;
use allot_store::dto::{StoredHandler, StoredQuota, StoredSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn core_quota() -> Quota {
    let mut limits = BTreeMap::new();
    limits.insert(Resource::Memory, Limit::new(200_000_000, 500_000_000, Action::Throttle));
    let mut cpu = Limit::new(150, 300, Action::Custom);
    cpu.burst = 450;
    cpu.burst_window = Duration::from_millis(12_500);
    limits.insert(Resource::Cpu, cpu);
    let mut tokens = Limit::new(50_000, 100_000, Action::Suspend);
    tokens.window = Some(Window::Day);
    limits.insert(Resource::Custom("tokens".into()), tokens);
    Quota {
        agent: AgentId::new("worker-1").unwrap(),
        group: "standard_agent".into(),
        priority: Priority::new(7).unwrap(),
        limits,
        custom_handler: Some(CustomHandler::Command(vec!["/bin/handle".into(), "--json".into()])),
    }
}

/// The quota as the previous version stored it in `spec.quota`.
fn stored_today() -> Value {
    json!({
        "agent": "worker-1",
        "group": "standard_agent",
        "priority": 7,
        "limits": {
            "cpu": {"soft": 150, "hard": 300, "burst": 450, "burst_window": 12500, "action": "custom"},
            "memory": {"soft": 200_000_000, "hard": 500_000_000, "burst": 500_000_000, "burst_window": 30000, "action": "throttle"},
            "tokens": {"soft": 50_000, "hard": 100_000, "burst": 100_000, "burst_window": 30000, "action": "suspend", "window": "day"}
        },
        "custom_handler": {"command": ["/bin/handle", "--json"]}
    })
}

#[test]
fn the_stored_shape_is_the_one_earlier_versions_wrote() {
    let q = core_quota();
    assert_eq!(serde_json::to_value(&q).unwrap(), stored_today(), "what the previous version wrote: a serialized core quota");
    let stored: StoredQuota = serde_json::from_value(stored_today()).unwrap();
    assert_eq!(stored.to_core(&q.agent).unwrap(), q, "loads and converts back to an equal core quota");
    assert_eq!(serde_json::to_value(StoredQuota::from_core(&q)).unwrap(), stored_today(), "and is written the same way");
    assert_eq!(StoredQuota::from_core(&q), stored);
    // A URL handler and no handler at all.
    let mut q = q;
    q.custom_handler = Some(CustomHandler::Url("http://127.0.0.1:9/v".into()));
    let v = serde_json::to_value(&q).unwrap();
    assert_eq!(v["custom_handler"], json!({"url": "http://127.0.0.1:9/v"}));
    assert_eq!(
        serde_json::from_value::<StoredQuota>(v.clone()).unwrap().custom_handler,
        Some(StoredHandler::Url("http://127.0.0.1:9/v".into()))
    );
    assert_eq!(serde_json::from_value::<StoredQuota>(v).unwrap().to_core(&q.agent).unwrap(), q);
    q.custom_handler = None;
    let v = serde_json::to_value(&q).unwrap();
    assert_eq!(serde_json::to_value(StoredQuota::from_core(&q)).unwrap(), v);
    assert_eq!(serde_json::from_value::<StoredQuota>(v).unwrap().to_core(&q.agent).unwrap(), q);
}

#[test]
fn the_agent_is_taken_from_the_row() {
    let stored: StoredQuota = serde_json::from_value(stored_today()).unwrap();
    let other = AgentId::new("renamed").unwrap();
    assert_eq!(stored.to_core(&other).unwrap().agent, other);
    let mut without = stored_today();
    without.as_object_mut().unwrap().remove("agent");
    assert!(serde_json::from_value::<StoredQuota>(without).is_ok(), "the id in the quota is not needed");
}

#[test]
fn overrides_give_every_field_of_every_limit() {
    let stored: StoredQuota = serde_json::from_value(stored_today()).unwrap();
    let o = stored.overrides().unwrap();
    assert_eq!(o.len(), 3);
    assert_eq!(
        o[&Resource::Cpu],
        LimitOverride {
            soft: Some(150),
            hard: Some(300),
            burst: Some(450),
            burst_window: Some(Duration::from_millis(12_500)),
            action: Some(Action::Custom),
            window: None,
        }
    );
    assert_eq!(o[&Resource::Custom("tokens".into())].window, Some(Window::Day));
    // Applied over any base, they reproduce the stored limits.
    let q = core_quota();
    for (r, l) in &q.limits {
        assert_eq!(&o[r].apply(None, "x").unwrap(), l);
        assert_eq!(&o[r].apply(Some(&Limit::new(1, 2, Action::Warn)), "x").unwrap(), l);
    }
}

#[test]
fn errors_name_the_field() {
    let agent = AgentId::new("a").unwrap();
    let broken = |path: &[&str], value: Value| {
        let mut v = stored_today();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        let q: StoredQuota = serde_json::from_value(v).unwrap();
        (q.to_core(&agent).unwrap_err().to_string(), q.overrides().map_err(|e| e.to_string()))
    };
    let (e, o) = broken(&["limits", "memory", "action"], json!("x"));
    assert!(e.starts_with(r#"limits.memory.action: unknown action "x""#), "{e}");
    assert_eq!(o.unwrap_err(), e);
    let (e, _) = broken(&["limits", "tokens", "window"], json!("fortnight"));
    assert_eq!(e, r#"limits.tokens.window: unknown window "fortnight": expected one of second, minute, hour, day"#);
    let (e, _) = broken(&["limits", "memory", "soft"], json!(600_000_000));
    assert_eq!(e, "limits.memory: soft (600M) must not exceed hard (500M)");
    let (e, _) = broken(&["priority"], json!(11));
    assert!(e.starts_with("priority: invalid priority 11"), "{e}");
    let (e, _) = broken(&["group"], json!("Bad Group"));
    assert!(e.starts_with(r#"group: invalid group name "Bad Group""#), "{e}");
    let mut v = stored_today();
    v["limits"]["Not A Resource"] = v["limits"]["cpu"].clone();
    let q: StoredQuota = serde_json::from_value(v).unwrap();
    let e = q.to_core(&agent).unwrap_err();
    assert_eq!(e.field, "limits.Not A Resource");
    assert!(e.problem.starts_with(r#"unknown resource "Not A Resource""#), "{e}");
}

fn agent_with_spec(spec: Value) -> StoredAgent {
    StoredAgent {
        id: "worker-1".into(),
        group: "standard_agent".into(),
        state: "running".into(),
        pid: Some(7),
        cgroup: json!(["/sys/fs/cgroup/allot/standard_agent/worker-1", "/sys/fs/cgroup/memory/allot/standard_agent/worker-1"]),
        spec,
        exit: None,
        updated_ms: 1,
    }
}

#[test]
fn specs_of_earlier_versions_load() {
    // Started, as written before: no `adopted`.
    let a = agent_with_spec(json!({"command": ["sleep", "60"], "priority": 7, "quota": stored_today()}));
    let spec = a.spec().unwrap();
    assert_eq!((spec.command, spec.priority, spec.adopted), (vec!["sleep".to_owned(), "60".to_owned()], 7, false));
    assert_eq!(spec.quota.to_core(&AgentId::new("worker-1").unwrap()).unwrap(), core_quota());
    assert_eq!(a.cgroup_dirs().len(), 2);
    // Adopted, with no quota known (`null`).
    let a = agent_with_spec(json!({"command": [], "priority": 5, "quota": null, "adopted": true}));
    let spec = a.spec().unwrap();
    assert!(spec.adopted && spec.command.is_empty());
    assert_eq!(spec.quota, StoredQuota::default());
    assert!(spec.quota.overrides().unwrap().is_empty());
    // The new writer's shape round-trips.
    let spec = StoredSpec {
        command: vec!["x".into()],
        priority: 3,
        quota: StoredQuota::from_core(&core_quota()),
        adopted: false,
        holds: Vec::new(),
        user: Some((65534, 65534)),
        terminating: Some(allot_store::dto::StoredTermination { reason: "operator".into(), kill_at_ms: 1_700_000_000_000 }),
        overrides: None,
        pools: vec!["openai".into(), "shared".into()],
        restartable: true,
    };
    let a = agent_with_spec(serde_json::to_value(&spec).unwrap());
    assert_eq!(a.spec().unwrap(), spec);
    assert_eq!(a.spec["pools"], json!(["openai", "shared"]), "the pools it draws on are stored");
    let earlier = agent_with_spec(json!({"command": ["x"], "priority": 3, "quota": stored_today()}));
    assert!(earlier.spec().unwrap().pools.is_empty(), "rows of earlier versions draw on no pool");
    assert!(!earlier.spec().unwrap().restartable, "rows of earlier versions are not restartable");
    assert_eq!(a.spec["quota"], stored_today(), "the quota inside the spec keeps its shape");
    // A spec of the wrong shape names the agent.
    let e = agent_with_spec(json!({"command": "sleep"})).spec().unwrap_err().to_string();
    assert!(e.starts_with("agent worker-1: stored spec: "), "{e}");
    // No cgroup.
    let mut a = agent_with_spec(json!({}));
    a.cgroup = Value::Null;
    assert!(a.cgroup_dirs().is_empty());
    assert_eq!(a.spec().unwrap(), StoredSpec::default());
}
