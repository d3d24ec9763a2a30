//! Budgets through a real daemon (issue 12): reserve, settle, release and
//! their refusals; usage reports as increments; expiries charged; an agent
//! touches only its own reservations; a policy throttle admits reservations
//! at a rate; reservations and spend survive a SIGKILL of the daemon.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{CgroupRootGuard, budget, call, launch, running, start_daemon};
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn events(sock: &Path, topic: &str) -> Vec<Value> {
    let (st, v) = call(sock, "GET", &format!("/v1/events?follow=false&topic={topic}"), "");
    assert_eq!(st, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

const WRITER: &str = r#"
[[agents]]
name = "w"
group = "lightweight_agent"
command = ["sleep", "600"]
limits.tokens = { soft = "8k/min", hard = "10k/min", action = "warn" }
limits.usd_micros = { hard = "1M/day" }
"#;

#[test]
fn reserve_settle_release_and_every_refusal() {
    let d = launch(WRITER, "budget-api");
    running(&d.sock, "w");
    let s = d.sock.as_path();
    let reserve = |body: &str| call(s, "POST", "/v1/agents/w/reservations", body);

    let (st, r1) = reserve(r#"{"resources": {"tokens": 4000, "usd_micros": "12k"}, "ttl": "60s"}"#);
    assert_eq!(st, 201, "{r1}");
    assert_eq!((r1["resources"]["tokens"].as_u64(), r1["resources"]["usd_micros"].as_u64()), (Some(4000), Some(12_000)), "{r1}");
    assert_eq!(r1["levels"]["tokens"], serde_json::json!(["agent:w"]), "{r1}");
    assert!(r1["expires_at"].is_string(), "{r1}");
    let id1 = r1["id"].as_u64().unwrap();

    // No room: 429 naming the level and resource, and when to come back (when reservation 1 expires).
    let (st, v) = reserve(r#"{"resources": {"tokens": 7000}}"#);
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("exhausted")), "{v}");
    assert_eq!((v["error"]["level"].as_str(), v["error"]["resource"].as_str()), (Some("agent:w"), Some("tokens")), "{v}");
    let retry = v["error"]["retry_after"].as_f64().unwrap();
    assert!(retry > 50.0 && retry <= 60.0, "the hold of reservation 1 ends in about 60 s: {v}");
    // More than the limit can ever give: no retry_after.
    let (st, v) = reserve(r#"{"resources": {"tokens": 10001}}"#);
    assert_eq!((st, v["error"]["retry_after"].is_null()), (429, true), "{v}");

    // Settle: the unused part comes back.
    let (st, v) = call(s, "POST", &format!("/v1/reservations/{id1}/settle"), r#"{"resources": {"tokens": 3100}}"#);
    assert_eq!(st, 200, "{v}");
    let line = v["settled"].as_array().unwrap().iter().find(|l| l["resource"] == "tokens").unwrap().clone();
    assert_eq!((line["actual"].as_u64(), line["returned"].as_u64(), line["overrun"].as_u64()), (Some(3100), Some(900), Some(0)), "{v}");
    let usd = v["settled"].as_array().unwrap().iter().find(|l| l["resource"] == "usd_micros").unwrap().clone();
    assert_eq!(usd["actual"].as_u64(), Some(12_000), "a resource left out is charged as reserved: {v}");
    let (st, v) = call(s, "POST", &format!("/v1/reservations/{id1}/settle"), "{}");
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "settled once only: {v}");
    let b = budget(s, "agent:w", "tokens");
    assert_eq!((b["spent"].as_u64(), b["reserved"].as_u64(), b["remaining"].as_u64()), (Some(3100), Some(0), Some(6900)), "{b}");

    // Exactly what is left fits; one more does not.
    let (st, r2) = reserve(r#"{"resources": {"tokens": 6900}}"#);
    assert_eq!(st, 201, "{r2}");
    assert_eq!(reserve(r#"{"resources": {"tokens": 1}}"#).0, 429);
    // A release gives it all back.
    let (st, v) = call(s, "DELETE", &format!("/v1/reservations/{}", r2["id"]), "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(call(s, "DELETE", &format!("/v1/reservations/{}", r2["id"]), "").0, 404);
    let b = budget(s, "agent:w", "tokens");
    assert_eq!((b["spent"].as_u64(), b["reserved"].as_u64()), (Some(3100), Some(0)), "{b}");

    // An overrun is charged and reported, never dropped.
    let (_, r3) = reserve(r#"{"resources": {"tokens": 100}}"#);
    let (st, v) = call(s, "POST", &format!("/v1/reservations/{}/settle", r3["id"]), r#"{"resources": {"tokens": 250}}"#);
    assert_eq!((st, v["settled"][0]["overrun"].as_u64()), (200, Some(150)), "{v}");
    assert_eq!(budget(s, "agent:w", "tokens")["spent"].as_u64(), Some(3350));
    assert_eq!(events(s, "resource_management.budget.overrun").len(), 1);

    // A usage report adds to the spend in the window.
    let (st, v) = call(s, "POST", "/v1/agents/w/usage", r#"{"resource": "tokens", "value": 50}"#);
    assert_eq!((st, v["usage"].as_u64()), (200, Some(3400)), "{v}");
    assert_eq!(budget(s, "agent:w", "tokens")["spent"].as_u64(), Some(3400));

    // An unsettled reservation is charged in full at its expiry.
    let (st, r4) = reserve(r#"{"resources": {"tokens": 600}, "ttl": "1s"}"#);
    assert_eq!(st, 201, "{r4}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while budget(s, "agent:w", "tokens")["spent"].as_u64() != Some(4000) {
        assert!(Instant::now() < deadline, "not charged at its expiry: {}", budget(s, "agent:w", "tokens"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call(s, "POST", &format!("/v1/reservations/{}/settle", r4["id"]), "{}").0, 404, "expired");
    assert!(events(s, "resource_management.budget.expired").iter().any(|e| e["data"]["reservation"] == r4["id"]));

    // Bad requests: 422 naming the field, or 404 for what is not there; nothing held.
    for (body, field) in [
        (r#"{"resources": {}}"#, "resources"),
        (r#"{"resources": {"memory": 5}}"#, "resources.memory"),
        (r#"{"resources": {"tokens": -5}}"#, "resources.tokens"),
        (r#"{"resources": {"tokens": "5/min"}}"#, "resources.tokens"),
        (r#"{"resources": {"tokens": 5}, "ttl": "0s"}"#, "ttl"),
        (r#"{"resources": {"tokens": 5}, "ttl": "soon"}"#, "ttl"),
        (r#"{"resources": {"gpu_hours": 5}}"#, "resources"),
    ] {
        let (st, v) = reserve(body);
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some(field)), "{body}: {v}");
    }
    assert_eq!(reserve(r#"{"resources": {"tokens": 5}, "extra": 1}"#).0, 422, "an unknown field");
    assert_eq!(call(s, "POST", "/v1/reservations/abc/settle", "{}").0, 404);
    assert_eq!(call(s, "POST", "/v1/reservations/999999/settle", "{}").0, 404);
    assert_eq!(call(s, "POST", "/v1/agents/nobody/reservations", r#"{"resources": {"tokens": 5}}"#).0, 404);
    assert_eq!(budget(s, "agent:w", "tokens")["reserved"].as_u64(), Some(0));
    assert_eq!(call(s, "GET", "/v1/pools/none", "").0, 404);
}

/// An agent reserves for itself only, and another agent's reservation is not
/// there for it (404), while the operator's view has it.
#[test]
fn an_agent_touches_only_its_own_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("agent-out.json");
    let script = dir.path().join("agent.py");
    std::fs::write(
        &script,
        r#"
import json, os, socket, sys, time
def req(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["ALLOT_SOCKET"])
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"null")
other = sys.argv[2]
while not os.path.exists(sys.argv[1] + ".go"):
    time.sleep(0.05)
rid = open(sys.argv[1] + ".go").read().strip()
out = {}
out["own"] = req("POST", "/v1/agents/a1/reservations", b'{"resources": {"tokens": 10}}')
out["for_other"] = req("POST", "/v1/agents/a2/reservations", b'{"resources": {"tokens": 10}}')[0]
out["settle_other"] = req("POST", f"/v1/reservations/{rid}/settle", b'{}')[0]
out["release_other"] = req("DELETE", f"/v1/reservations/{rid}")[0]
out["list"] = req("GET", "/v1/budgets")[1]
out["release_own"] = req("DELETE", f"/v1/reservations/{out['own'][1]['id']}")[0]
open(sys.argv[1] + ".tmp", "w").write(json.dumps(out))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"#,
    )
    .unwrap();
    // The agent runs as root here (the test's user) so it can read its script; membership decides, not uid.
    let fleet = format!(
        r#"
[[agents]]
name = "a1"
group = "lightweight_agent"
user = "root"
command = ["/usr/bin/python3", "{}", "{}", "a2"]
limits.tokens = {{ hard = "1k/min" }}

[[agents]]
name = "a2"
group = "lightweight_agent"
command = ["sleep", "600"]
limits.tokens = {{ hard = "1k/min" }}
"#,
        script.display(),
        out.display()
    );
    let d = real_daemon::launch_in(dir, &fleet, "budget-own");
    running(&d.sock, "a1");
    running(&d.sock, "a2");
    let (st, theirs) = call(&d.sock, "POST", "/v1/agents/a2/reservations", r#"{"resources": {"tokens": 20}}"#);
    assert_eq!(st, 201, "{theirs}");
    std::fs::write(out.with_extension("json.go"), theirs["id"].to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() {
        assert!(Instant::now() < deadline, "the agent wrote nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["own"][0], 201, "{v}");
    assert_eq!(v["for_other"], 403, "{v}");
    assert_eq!((v["settle_other"].as_u64(), v["release_other"].as_u64()), (Some(404), Some(404)), "{v}");
    assert_eq!(v["release_own"], 200, "{v}");
    let levels: Vec<&str> = v["list"]["budgets"].as_array().unwrap().iter().map(|b| b["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["agent:a1"], "an agent sees the budgets that apply to it: {v}");
    assert!(v["list"]["reservations"].as_array().unwrap().iter().all(|r| r["agent"] == "a1"), "{v}");
    // The other agent's reservation is still held.
    assert_eq!(budget(&d.sock, "agent:a2", "tokens")["reserved"].as_u64(), Some(20));
}

/// A policy throttle on a budget resource admits the agent's reservations at
/// a rate under its soft limit (429 `throttled` with `retry_after`), instead
/// of throttling its cpu.
#[test]
fn a_throttle_on_a_budget_admits_reservations_at_a_rate() {
    let fleet = r#"
[policy]
delays = { throttle = "0s" }

[[agents]]
name = "t"
group = "lightweight_agent"
command = ["sleep", "600"]
limits.tokens = { soft = "100/s", hard = "200/s", action = "throttle" }
"#;
    let d = launch(fleet, "budget-throttle");
    running(&d.sock, "t");
    let s = d.sock.as_path();
    // Over hard: the policy throttles at once.
    let (st, v) = call(s, "POST", "/v1/agents/t/usage", r#"{"resource": "tokens", "value": 250}"#);
    assert_eq!(st, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let (_, h) = call(s, "GET", "/v1/history?agent=t", "");
        if h.as_array().is_some_and(|a| a.iter().any(|r| r["action"] == "throttle")) {
            break h;
        }
        assert!(Instant::now() < deadline, "no throttle: {h}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rec = history.as_array().unwrap().iter().find(|r| r["action"] == "throttle").unwrap().clone();
    assert!(rec["detail"].as_str().unwrap().contains("reservations of tokens admitted at"), "{rec}");
    assert_eq!(d.agent("t")["held_by"]["throttle"], serde_json::json!([]), "no cpu throttle for a budget resource");
    // The spend leaves the 1 s window; then reservations are paced at under 90 a second.
    std::thread::sleep(Duration::from_millis(1200));
    let mut admitted = 0;
    let mut throttled = None;
    for _ in 0..5 {
        let (st, v) = call(s, "POST", "/v1/agents/t/reservations", r#"{"resources": {"tokens": 50}, "ttl": "10s"}"#);
        match st {
            201 => admitted += 1,
            429 if v["error"]["code"] == "throttled" => {
                throttled = Some(v);
                break;
            }
            _ => panic!("{st} {v}"),
        }
    }
    let v = throttled.unwrap_or_else(|| panic!("{admitted} reservations of 50 admitted at once under a throttle to 90/s"));
    assert!((1..=2).contains(&admitted), "{admitted}");
    let retry = v["error"]["retry_after"].as_f64().unwrap();
    assert!(retry > 0.0 && retry <= 1.0, "{v}");
}

/// Reservations and spend are in the store: after a SIGKILL of the daemon
/// the new one holds the same reservations and counts the same spend, and a
/// reservation made before the kill settles after it.
#[test]
fn reservations_and_spend_survive_a_sigkill() {
    let name = format!("allot-test-{}-budget-kill", std::process::id());
    let _guard = CgroupRootGuard(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let (child, sock, _) = start_daemon(dir.path(), WRITER, &name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, sock)
    };
    let (mut child, sock) = start();
    running(&sock, "w");
    let reserve = |body: &str| call(&sock, "POST", "/v1/agents/w/reservations", body);
    let (_, a) = reserve(r#"{"resources": {"tokens": 1000}, "ttl": "5m"}"#);
    let (_, b) = reserve(r#"{"resources": {"tokens": 2000, "usd_micros": 500}, "ttl": "5m"}"#);
    let (st, _) = call(&sock, "POST", &format!("/v1/reservations/{}/settle", a["id"]), r#"{"resources": {"tokens": 700}}"#);
    assert_eq!(st, 200);
    let before = call(&sock, "GET", "/v1/budgets", "").1;
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, sock) = start();
    let after = call(&sock, "GET", "/v1/budgets", "").1;
    let pick = |v: &Value, r: &str| v["budgets"].as_array().unwrap().iter().find(|b| b["resource"] == r).cloned().unwrap();
    for r in ["tokens", "usd_micros"] {
        let (x, y) = (pick(&before, r), pick(&after, r));
        assert_eq!((x["spent"].clone(), x["reserved"].clone()), (y["spent"].clone(), y["reserved"].clone()), "{r}: {x} then {y}");
    }
    assert_eq!(pick(&after, "tokens")["reserved"], 2000);
    assert_eq!(pick(&after, "tokens")["spent"], 700);
    let ids: Vec<&Value> = after["reservations"].as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&b["id"]], "{after}");
    // Ids go on from where they were; the old reservation settles.
    let (st, c) = reserve(r#"{"resources": {"tokens": 1}}"#);
    assert_eq!(st, 201);
    assert!(c["id"].as_u64() > b["id"].as_u64(), "{c} after {b}");
    let (st, v) = call(&sock, "POST", &format!("/v1/reservations/{}/settle", b["id"]), r#"{"resources": {"tokens": 1500}}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(budget(&sock, "agent:w", "tokens")["spent"], 2200);
    let _ = child.kill();
    let _ = child.wait();
}

const LLM: &str = r#"
[groups.llm]
extends = "standard_agent"
totals = { tokens = { hard = "1000", soft = "600", per = "day" } }

[pools.openai]
usd_micros = { hard = "500", calendar = "month", day = 1, at = "00:00", tz = "UTC" }

[[agents]]
name = "p"
group = "llm"
command = ["sleep", "600"]
limits.tokens = { hard = "800/min" }
pools = ["openai"]

[[agents]]
name = "q"
group = "llm"
command = ["sleep", "600"]
pools = ["openai"]
"#;

/// A reservation holds at every level that applies (agent, group, pool),
/// all or nothing; the level that refuses is named; pools are declared,
/// replaced and deleted through the API, and fail closed.
#[test]
fn group_and_pool_budgets_hold_at_every_level_and_pools_change_through_the_api() {
    let d = launch(LLM, "budget-levels");
    running(&d.sock, "p");
    running(&d.sock, "q");
    let s = d.sock.as_path();
    let reserve = |a: &str, body: &str| call(s, "POST", &format!("/v1/agents/{a}/reservations"), body);
    let (st, r) = reserve("p", r#"{"resources": {"tokens": 700, "usd_micros": 100}}"#);
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["levels"]["tokens"], serde_json::json!(["agent:p", "group:llm"]), "{r}");
    assert_eq!(r["levels"]["usd_micros"], serde_json::json!(["pool:openai"]), "{r}");
    // q has no agent budget: the group's is what is left (300).
    let (st, v) = reserve("q", r#"{"resources": {"tokens": 301}}"#);
    assert_eq!((st, v["error"]["level"].as_str()), (429, Some("group:llm")), "{v}");
    let (st, v) = reserve("q", r#"{"resources": {"tokens": 300, "usd_micros": 401}}"#);
    assert_eq!((st, v["error"]["level"].as_str(), v["error"]["resource"].as_str()), (429, Some("pool:openai"), Some("usd_micros")), "{v}");
    // All or nothing: the refused reservation held no tokens.
    assert_eq!(budget(s, "group:llm", "tokens")["reserved"].as_u64(), Some(700));
    let pool = budget(s, "pool:openai", "usd_micros");
    assert_eq!(pool["window"]["kind"], "calendar", "{pool}");
    assert!(pool["resets_at"].as_str().is_some_and(|t| t.contains("-01T00:00:00")), "the 1st of a month: {pool}");
    let (st, _) = call(s, "POST", &format!("/v1/reservations/{}/settle", r["id"]), r#"{"resources": {"tokens": 650, "usd_micros": 90}}"#);
    assert_eq!(st, 200);
    assert_eq!(budget(s, "group:llm", "tokens")["spent"].as_u64(), Some(650));
    let soft = events(s, "resource_management.budget.soft");
    assert!(
        soft.len() == 1 && soft[0]["data"]["level"] == "group:llm" && soft[0]["data"]["spent"] == 650,
        "over the group's soft 600: {soft:?}"
    );
    assert_eq!(budget(s, "pool:openai", "usd_micros")["spent"].as_u64(), Some(90));

    // The pool replaced through the API: a new limit under the same window keeps the spend.
    let (st, v) =
        call(s, "PUT", "/v1/pools/openai", r#"{"usd_micros": {"hard": "1k", "calendar": "month", "day": 1, "at": "00:00", "tz": "UTC"}}"#);
    assert_eq!(st, 200, "{v}");
    let pool = budget(s, "pool:openai", "usd_micros");
    assert_eq!((pool["hard"].as_u64(), pool["spent"].as_u64()), (Some(1000), Some(90)), "{pool}");
    // Another window starts clean, and says so.
    let (st, v) = call(s, "PUT", "/v1/pools/openai", r#"{"usd_micros": "2k/day"}"#);
    assert_eq!(st, 200, "{v}");
    assert_eq!(budget(s, "pool:openai", "usd_micros")["spent"].as_u64(), Some(0));
    let changed = events(s, "resource_management.budget.window_changed");
    assert!(changed.iter().any(|e| e["data"]["level"] == "pool:openai" && e["data"]["dropped"] == 90), "{changed:?}");
    // Bad pool bodies name the field.
    for (body, field) in [
        (r#"{"usd_micros": {"hard": "1k", "tz": "Europe/Paris", "calendar": "day"}}"#, "usd_micros.tz"),
        (r#"{"memory": "1Gi"}"#, "memory"),
        (r#"[1]"#, "body"),
    ] {
        let (st, v) = call(s, "PUT", "/v1/pools/openai", body);
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some(field)), "{body}: {v}");
    }
    // A pool of the file cannot be deleted once the API's version is gone; the API's goes back to the file's.
    let (st, v) = call(s, "DELETE", "/v1/pools/openai", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(budget(s, "pool:openai", "usd_micros")["hard"].as_u64(), Some(500), "the file's again");
    assert_eq!(call(s, "DELETE", "/v1/pools/openai", "").0, 409);
    // A pool made through the API; a pool nobody declared fails closed for an agent that names it.
    assert_eq!(call(s, "PUT", "/v1/pools/extra", r#"{"tokens": "10/min"}"#).0, 200);
    assert_eq!(call(s, "GET", "/v1/pools/extra", "").1["budgets"][0]["hard"], 10);
    assert_eq!(call(s, "DELETE", "/v1/pools/extra", "").0, 200);
    assert_eq!(call(s, "GET", "/v1/pools/extra", "").0, 404);
    let body = r#"{"name": "r", "group": "llm", "command": ["sleep", "600"], "pools": ["ghost"]}"#;
    assert_eq!(call(s, "POST", "/v1/agents", body).0, 201);
    running(s, "r");
    let (st, v) = reserve("r", r#"{"resources": {"tokens": 1}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("resources")), "pool:ghost has no budget: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("pool:ghost"), "{v}");
}
