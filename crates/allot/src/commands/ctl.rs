//! CLI commands that talk to a running `allot daemon`: `ps`, `suspend`,
//! `resume`, `terminate`, `quota get|set`, `compliance`, `run`, `adopt`
//! (`budget` is in `commands::budget`).

use super::{Error, print};
use crate::cli::{ActArgs, AdoptArgs, ComplianceArgs, PsArgs, QuotaSetArgs, RunArgs};
use crate::client::{default_socket, failure, request};
use crate::output::table;
use allot_core::Resource;
use allot_core::quantity::format_approx;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn socket(s: &Option<PathBuf>) -> Result<PathBuf, Error> {
    Ok(match s {
        Some(p) => p.clone(),
        None => default_socket()?,
    })
}

pub(super) fn ok(status: u16, v: Value) -> Result<Value, Error> {
    if (200..300).contains(&status) { Ok(v) } else { Err(failure(status, &v).into()) }
}

pub(crate) fn ps(args: &PsArgs) -> Result<ExitCode, Error> {
    let (st, v) = request(&socket(&args.socket)?, "GET", "/v1/agents", None)?;
    let v = ok(st, v)?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ["agent", "group", "state", "pids", "memory", "cpu", "processes", "threads", "budget", "last action"].map(String::from).to_vec(),
    ];
    for a in v.as_array().into_iter().flatten() {
        let u = |r: Resource| a["usage"][r.name()].as_u64().map_or_else(|| "-".to_owned(), |x| format_approx(r.unit(), x));
        rows.push(vec![
            a["id"].as_str().unwrap_or("?").into(),
            a["group"].as_str().unwrap_or("?").into(),
            // An agent running as root is marked: it can leave its cgroup and act as the operator.
            format!(
                "{}{}{}",
                a["state"].as_str().unwrap_or("?"),
                // Killed by the kernel's OOM killer: not the agent's own exit.
                if a["exit_cause"] == "oom_kill" { " (OOM kill)" } else { "" },
                if a["root"] == true { " (ROOT)" } else { "" }
            ),
            a["pids"].as_array().map_or(0, Vec::len).to_string(),
            u(Resource::Memory),
            u(Resource::Cpu),
            u(Resource::Processes),
            u(Resource::Threads),
            super::budget::use_cell(&a["budgets"]),
            a["last_action"].as_str().unwrap_or("").into(),
        ]);
    }
    print(&table(&rows))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn act(args: &ActArgs, action: &str) -> Result<ExitCode, Error> {
    let (st, v) = request(&socket(&args.socket)?, "POST", &format!("/v1/agents/{}/{action}", args.id), None)?;
    let v = ok(st, v)?;
    let name = action.split('?').next().unwrap_or(action);
    print(&format!("{}: {name}: {}\n", args.id, v["detail"].as_str().unwrap_or("done")))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn quota_get(args: &ActArgs) -> Result<ExitCode, Error> {
    let (st, v) = request(&socket(&args.socket)?, "GET", &format!("/v1/agents/{}/quota", args.id), None)?;
    let v = ok(st, v)?;
    print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    Ok(ExitCode::SUCCESS)
}

fn limit_changes(changes: &[String]) -> Result<Map<String, Value>, Error> {
    let mut limits: Map<String, Value> = Map::new();
    for c in changes {
        let Some((key, value)) = c.split_once('=') else {
            return Err(format!("{c:?}: expected RESOURCE.FIELD=VALUE, such as memory.hard=300Mi").into());
        };
        let Some((res, field)) = key.split_once('.') else {
            return Err(format!("{c:?}: expected RESOURCE.FIELD=VALUE, such as memory.hard=300Mi").into());
        };
        if !["soft", "hard", "burst", "action"].contains(&field) {
            return Err(format!("{c:?}: unknown field {field:?}; use soft, hard, burst or action").into());
        }
        let entry = limits.entry(res.to_owned()).or_insert_with(|| json!({}));
        entry[field] = json!(value);
    }
    Ok(limits)
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode, Error> {
    let sock = socket(&args.socket)?;
    let mut body = json!({"name": args.name, "group": args.group, "command": args.command, "limits": limit_changes(&args.limits)?});
    if let Some(p) = args.priority {
        body["priority"] = json!(p);
    }
    if let Some(u) = &args.user {
        body["user"] = json!(u);
    }
    let (st, v) = request(&sock, "POST", "/v1/agents", Some(&body))?;
    let v = ok(st, v)?;
    if args.json {
        print(&format!("{v}\n"))?;
    } else {
        let root = if v["root"] == true { " AS ROOT" } else { "" };
        print(&format!("{}: started, pid {}, uid {}{root}\n", args.name, v["pid"], v["uid"]))?;
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (st, a) = request(&sock, "GET", &format!("/v1/agents/{}", args.name), None)?;
        let a = ok(st, a)?;
        if a["state"] == "exited" {
            if args.json {
                print(&format!("{}\n", json!({"id": args.name, "state": "exited", "exit": a["exit"]})))?;
            } else {
                print(&format!("{}: {}\n", args.name, a["exit"].as_str().unwrap_or("exited")))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
}

pub(crate) fn adopt(args: &AdoptArgs) -> Result<ExitCode, Error> {
    let body =
        json!({"name": args.name, "group": args.group, "pid": args.pid, "move": args.move_it, "limits": limit_changes(&args.limits)?});
    let (st, v) = request(&socket(&args.socket)?, "POST", "/v1/adopt", Some(&body))?;
    let v = ok(st, v)?;
    print(&format!("{}: adopted pid {}{}\n", args.name, args.pid, if args.move_it { " (moved into its cgroup)" } else { "" }))?;
    if let Some(w) = v["warning"].as_str() {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn quota_set(args: &QuotaSetArgs) -> Result<ExitCode, Error> {
    let limits = limit_changes(&args.changes)?;
    let (st, v) = request(&socket(&args.socket)?, "PATCH", &format!("/v1/agents/{}/quota", args.id), Some(&json!({"limits": limits})))?;
    let v = ok(st, v)?;
    print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn compliance(args: &ComplianceArgs) -> Result<ExitCode, Error> {
    let path = format!("/v1/agents/{}/compliance", super::report::encode(&args.id));
    let (st, v) = request(&socket(&args.socket)?, "GET", &path, None)?;
    let v = ok(st, v)?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["resource", "usage", "soft", "hard", "burst", "status", "pending"].map(String::from).to_vec()];
    for r in v["resources"].as_array().into_iter().flatten() {
        let res: Resource = r["resource"].as_str().unwrap_or("").parse().unwrap_or(Resource::Custom("?".into()));
        let q = |x: &Value| x.as_u64().map_or_else(|| "-".to_owned(), |n| format_approx(res.unit(), n));
        let pending = match r["pending"].as_object() {
            Some(p) => format!(
                "{} at {} (in {:.0} s)",
                p["action"].as_str().unwrap_or("?"),
                p["due"].as_str().unwrap_or("?"),
                p["in_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            ),
            None => "-".to_owned(),
        };
        rows.push(vec![
            res.name().to_owned(),
            q(&r["usage"]),
            q(&r["soft"]),
            q(&r["hard"]),
            q(&r["burst"]),
            r["status"].as_str().unwrap_or("?").to_owned(),
            pending,
        ]);
    }
    let holders = |k: &str| {
        let hs: Vec<&str> = v[k].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if hs.is_empty() { "no".to_owned() } else { format!("yes, held by {}", hs.join(", ")) }
    };
    let head = format!(
        "{} ({}): {}; throttled: {}; suspended: {}\n",
        args.id,
        v["state"].as_str().unwrap_or("?"),
        if v["compliant"] == true { "compliant" } else { "not compliant" },
        holders("throttled_by"),
        holders("suspended_by")
    );
    print(&format!("{head}{}", table(&rows)))?;
    Ok(ExitCode::SUCCESS)
}
