//! An independent hostile check of issue 11 against a real daemon: what a
//! careless operator or an agent can send that the earlier tests did not.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{call, launch, running};
use serde_json::Value;
use std::time::Duration;

/// A limit written through the API with a window (`"50/h"`) is counted in
/// that window: at the start in the window given, and in a quota change
/// converted to the window the limit already has (as usage reports are),
/// rounded up. Before: the window was dropped, so `"50/h"` became 50 per
/// minute and `"1440/day"` 1440 per minute.
#[test]
fn limit_values_written_with_a_window_are_counted_in_it() {
    let d = launch("", "win");
    let start = |name: &str, limits: &str| {
        let body = format!(r#"{{"name": "{name}", "group": "lightweight_agent", "command": ["sleep", "600"], "limits": {limits}}}"#);
        let (st, v) = call(&d.sock, "POST", "/v1/agents", &body);
        assert_eq!(st, 201, "{v}");
        running(&d.sock, name);
    };
    let tokens = |id: &str| call(&d.sock, "GET", &format!("/v1/agents/{id}/quota"), "").1["limits"]["tokens"].clone();
    let report = |id: &str, value: &str| {
        call(&d.sock, "POST", &format!("/v1/agents/{id}/usage"), &format!(r#"{{"resource": "tokens", "value": "{value}"}}"#)).1
    };

    // At the start: the window given is the limit's.
    start("daily", r#"{"tokens": {"hard": "1440/day"}}"#);
    assert_eq!(tokens("daily")["hard"], 1440, "{}", tokens("daily"));
    let r = report("daily", "2/min");
    assert_eq!((r["value"].as_u64(), r["per"].as_str()), (Some(2880), Some("day")), "2/min is 2880/day: {r}");
    assert_eq!(r["violation"]["kind"], "hard", "2880/day is over 1440/day: {r}");

    // A change in another window is converted to the limit's (per minute here).
    start("minute", r#"{"tokens": {"hard": "100/min"}}"#);
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/minute/quota", r#"{"limits": {"tokens": {"soft": "50/h"}}}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["limits"]["tokens"]["soft"].as_u64(), v["limits"]["tokens"]["hard"].as_u64()), (Some(1), Some(100)), "{v}");
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/minute/quota", r#"{"limits": {"tokens": {"hard": "12k/h", "burst": "18k/h"}}}"#);
    assert_eq!(st, 200, "{v}");
    let t = &v["limits"]["tokens"];
    assert_eq!((t["soft"].as_u64(), t["hard"].as_u64(), t["burst"].as_u64()), (Some(1), Some(200), Some(300)), "{v}");
    assert_eq!(report("minute", "250")["per"], "min");
    // A change that would break soft <= hard once converted names its field.
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/minute/quota", r#"{"limits": {"tokens": {"soft": "4/s"}}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("limits.tokens.soft")), "240/min is over hard 200/min: {v}");

    // Two windows in one limit of a body: 422 naming the field, as in a fleet file.
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/minute/quota", r#"{"limits": {"tokens": {"soft": "1/s", "hard": "100/min"}}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("limits.tokens.hard")), "{v}");
    assert_eq!(tokens("minute")["hard"], 200, "unchanged");

    // A change that gives every count moves the limit to its window (a daily budget stays daily).
    let (st, v) = call(
        &d.sock,
        "PATCH",
        "/v1/agents/minute/quota",
        r#"{"limits": {"tokens": {"soft": "1k/day", "hard": "2k/day", "burst": "3k/day"}}}"#,
    );
    assert_eq!(st, 200, "{v}");
    let t = &v["limits"]["tokens"];
    assert_eq!(
        (t["soft"].as_u64(), t["hard"].as_u64(), t["burst"].as_u64(), t["window"].as_str()),
        (Some(1000), Some(2000), Some(3000), Some("day")),
        "{v}"
    );
    assert_eq!(report("minute", "250")["per"], "day");
}

/// A group total of 0 (or of memory under one page, which the kernel
/// rounds to 0) lets no member run: the kernel refuses the member's cgroup
/// (ENOMEM at mkdir) or its first fork (`pids.max` 0). Refused with 422
/// naming the total. Before: accepted (201), and a start in the group
/// failed with "cannot write (mkdir) ... Cannot allocate memory".
#[test]
fn a_group_total_that_lets_no_member_run_is_refused() {
    let d = launch("", "totals");
    for (totals, field) in [
        (r#"{"cpu": "0"}"#, "totals.cpu"),
        (r#"{"memory": "1"}"#, "totals.memory"),
        (r#"{"memory": "0"}"#, "totals.memory"),
        (r#"{"processes": 0}"#, "totals.processes"),
    ] {
        let body = format!(r#"{{"extends": "lightweight_agent", "totals": {totals}}}"#);
        let (st, v) = call(&d.sock, "POST", "/v1/groups/g", &body);
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some(field)), "{totals}: {v}");
        let (st, v) = call(&d.sock, "PUT", "/v1/groups/lightweight_agent", &body);
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some(field)), "{totals}: {v}");
    }
    let (st, v) = call(&d.sock, "POST", "/v1/groups/g", r#"{"extends": "lightweight_agent", "totals": {"memory": "64Mi", "cpu": "10m"}}"#);
    assert_eq!(st, 201, "{v}");
}

/// The API takes every field of a limit the fleet file takes: `burst_window`
/// was refused (422, unknown field) in `PATCH .../quota` and `POST /v1/agents`.
#[test]
fn a_burst_window_can_be_given_through_the_api() {
    let d = launch("", "bw");
    let body = r#"{"name": "b", "group": "lightweight_agent", "command": ["sleep", "600"],
                  "limits": {"memory": {"hard": "100Mi", "burst": "150Mi", "burst_window": "20s"}}}"#;
    let (st, v) = call(&d.sock, "POST", "/v1/agents", body);
    assert_eq!(st, 201, "{v}");
    running(&d.sock, "b");
    let memory = |v: &Value| v["limits"]["memory"]["burst_window"].clone();
    assert_eq!(memory(&call(&d.sock, "GET", "/v1/agents/b/quota", "").1), 20_000, "in milliseconds");
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/b/quota", r#"{"limits": {"memory": {"burst_window": "45s"}}}"#);
    assert_eq!((st, memory(&v)), (200, Value::from(45_000)), "{v}");
    let (st, v) = call(&d.sock, "PATCH", "/v1/agents/b/quota", r#"{"limits": {"memory": {"burst_window": "9999999d"}}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("limits.memory.burst_window")), "{v}");
}

/// An agent's channel file (its throttle, scale-down and termination notices)
/// is its own: `0600`, owned by the agent's user. It was `0644`, readable by
/// every other agent.
#[test]
fn an_agents_channel_file_is_readable_by_that_agent_only() {
    use std::os::unix::fs::MetadataExt;
    let d = launch("", "chan");
    // The agent (nobody: the daemon runs as root) checks it can read its channel, else exits at once.
    let body =
        r#"{"name": "c", "group": "lightweight_agent", "command": ["sh", "-c", "test -r \"$ALLOT_EVENTS_FILE\" && exec sleep 600"]}"#;
    let (st, v) = call(&d.sock, "POST", "/v1/agents", body);
    assert_eq!(st, 201, "{v}");
    running(&d.sock, "c");
    std::thread::sleep(Duration::from_millis(500));
    let (_, a) = call(&d.sock, "GET", "/v1/agents/c", "");
    assert_eq!(a["state"], "running", "the agent reads its channel: {a}");
    let file = d.state.parent().unwrap().join("agents/c.jsonl");
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(meta.mode() & 0o777, 0o600, "{}", file.display());
    assert_eq!(Some(meta.uid()), a["uid"].as_u64().map(|u| u as u32), "owned by the agent's user: {a}");
}
