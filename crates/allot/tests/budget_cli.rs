//! `allot budget` and the budget column of `allot ps` against a real daemon:
//! an agent with a token budget (`limits.tokens = { soft = "8k/min", hard =
//! "10k/min" }`) makes a reservation and settles it, holds another, and the
//! CLI shows them; unknown agents and pools are errors with the daemon's
//! message and a non-zero exit.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = r#"
[policy]
sample_interval = "250ms"

[[agents]]
name = "writer"
group = "standard_agent"
command = ["sleep", "1000"]
limits.tokens = { soft = "8k/min", hard = "10k/min" }

[[agents]]
name = "idle"
group = "standard_agent"
command = ["sleep", "1000"]
"#;

/// Run `allot ARGS --socket SOCK`: (exit code, stdout, stderr).
fn cli(sock: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(args)
        .arg("--socket")
        .arg(sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "allot {args:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn post(sock: &Path, path: &str, body: &str) -> (u16, Value) {
    let (st, text) = real_daemon::http(sock, "POST", path, body);
    (st, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// The cells of a table row (columns are separated by at least two spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// The row of `text` whose first cell is `first`, as cells.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines().map(cells).find(|c| c.first().is_some_and(|f| f == first)).unwrap_or_else(|| panic!("no row {first}:\n{text}"))
}

#[test]
fn budget_and_ps_show_spend_reservations_and_errors() {
    let d = real_daemon::launch(FLEET, "budget-cli");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !["writer", "idle"].iter().all(|a| d.agent(a)["state"] == "running") {
        assert!(Instant::now() < deadline, "the agents did not start: {} {}", d.agent("writer"), d.agent("idle"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Reserve 4000, settle 3100 (900 returned); hold 2000 more.
    let (st, r1) = post(&d.sock, "/v1/agents/writer/reservations", r#"{"resources": {"tokens": 4000}, "ttl": "60s"}"#);
    assert_eq!(st, 201, "{r1}");
    let (st, s) = post(&d.sock, &format!("/v1/reservations/{}/settle", r1["id"]), r#"{"resources": {"tokens": 3100}}"#);
    assert_eq!(st, 200, "{s}");
    let (st, r2) = post(&d.sock, "/v1/agents/writer/reservations", r#"{"resources": {"tokens": "2k"}, "ttl": "10m"}"#);
    assert_eq!(st, 201, "{r2}");
    let r2_id = r2["id"].to_string();

    // Every budget: the writer's, with its window, limit and soft, spend, hold, remaining and reset.
    let (code, out, err) = cli(&d.sock, &["budget"]);
    assert_eq!(code, Some(0), "{err}");
    let head = out.lines().next().unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(head, ["level", "resource", "window", "limit", "spent", "reserved", "remaining", "resets"], "{out}");
    let w = row(&out, "agent:writer");
    assert_eq!(w[..7], ["agent:writer", "tokens", "rolling 1m", "10k (soft 8k)", "3100", "2k", "4900"], "{out}");
    // The settled spend leaves the rolling minute within a minute and a bucket: "in 59s (HH:MM:SS UTC)".
    let resets = &w[7];
    assert!(resets.starts_with("in ") && resets.ends_with(" UTC)") && (resets.contains("s (") || resets.contains("m (")), "{out}");
    assert_eq!(out.lines().last(), Some("1 open reservation"), "{out}");
    assert!(!out.contains("agent:idle"), "idle has no budget: {out}");

    // The writer's budgets and its open reservation.
    let (code, out, err) = cli(&d.sock, &["budget", "writer"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(row(&out, "agent:writer")[..7], w[..7], "{out}");
    let res = row(&out, &r2_id);
    assert_eq!(res[1], "tokens 2k", "{out}");
    assert!(res[2] == "in 10m" || res[2].starts_with("in 9m"), "expires in about 10 min: {out}");
    let head = out.lines().map(str::split_whitespace).map(Iterator::collect::<Vec<_>>).find(|c| c.first() == Some(&"reservation"));
    assert_eq!(head.unwrap(), ["reservation", "resources", "expires"], "{out}");

    let (code, out, err) = cli(&d.sock, &["budget", "idle"]);
    assert_eq!((code, out.as_str()), (Some(0), "no budget applies to agent idle\nno open reservations\n"), "{err}");

    // --json: the daemon's answer as is.
    let (code, out, err) = cli(&d.sock, &["budget", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let b = v["budgets"].as_array().unwrap().iter().find(|b| b["level"] == "agent:writer").unwrap();
    assert_eq!(
        (&b["resource"], &b["hard"], &b["soft"], &b["spent"], &b["reserved"], &b["remaining"], &b["window"]["text"]),
        (
            &Value::from("tokens"),
            &Value::from(10_000),
            &Value::from(8000),
            &Value::from(3100),
            &Value::from(2000),
            &Value::from(4900),
            &Value::from("rolling 1m")
        ),
        "{out}"
    );
    assert_eq!(v["reservations"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v["reservations"][0]["id"], r2["id"], "{out}");

    // Unknown pool and agent: the daemon's message, exit 1, nothing on stdout.
    let (code, out, err) = cli(&d.sock, &["budget", "--pool", "nope"]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with("allot: error: the daemon answered 404: ") && err.contains("nope"), "{err}");
    let (code, out, err) = cli(&d.sock, &["budget", "nosuch"]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("404") && err.contains("no agent \"nosuch\""), "{err}");

    // ps: the writer's budget use, `-` for the idle agent.
    let (code, out, err) = cli(&d.sock, &["ps"]);
    assert_eq!(code, Some(0), "{err}");
    let head = cells(out.lines().next().unwrap());
    let col = head.iter().position(|h| h == "budget").unwrap_or_else(|| panic!("no budget column: {out}"));
    let at = out.lines().next().unwrap().find("budget").unwrap();
    let cell = |agent: &str| {
        let line = out.lines().find(|l| l.starts_with(&format!("{agent} "))).unwrap_or_else(|| panic!("no {agent}: {out}"));
        line.get(at..).unwrap_or("").split("  ").next().unwrap().trim().to_owned()
    };
    assert_eq!(cell("writer"), "tokens 3100/10k", "column {col}: {out}");
    assert_eq!(cell("idle"), "-", "{out}");
}
