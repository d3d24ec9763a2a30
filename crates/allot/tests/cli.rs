//! The `allot` binary as a user runs it: output shapes, exit statuses, help.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::{Command, Output};

fn allot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allot")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn groups_json_has_the_promised_shape_and_the_sketch_numbers() {
    let o = allot(&["groups", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let groups = v.as_array().unwrap();
    let names: Vec<_> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["lightweight_agent", "standard_agent", "heavy_computation_agent"]);
    let std = &groups[1];
    assert_eq!(std["description"], "Standard agents with moderate resource requirements");
    assert_eq!(std["limits"]["memory"]["soft"], 200_000_000u64);
    assert_eq!(std["limits"]["memory"]["hard"], 500_000_000u64);
    assert_eq!(std["limits"]["memory"]["burst"], 500_000_000u64);
    assert_eq!(std["limits"]["memory"]["action"], "throttle");
    assert_eq!(std["limits"]["cpu"]["hard"], 300);
    assert_eq!(std["limits"]["processes"]["action"], "scale_down");
    assert_eq!(std["totals"]["memory"], 4_000_000_000u64);
    assert_eq!(std["totals"]["cpu"], 6000);
    assert_eq!(std["totals"]["processes"], 2000);
    assert_eq!(groups[0]["limits"]["memory"]["action"], "warn");
    assert_eq!(groups[2]["limits"]["processes"]["action"], "terminate");
}

#[test]
fn groups_text_shows_human_units() {
    let o = allot(&["groups"]);
    let out = stdout(&o);
    assert!(out.contains("lightweight_agent"), "{out}");
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["memory", "200M", "500M", "500M", "30s", "throttle", "4G"]),
        "{out}"
    );
}

#[test]
fn groups_with_a_fleet_include_its_groups() {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/basic.toml");
    let o = allot(&["groups", "--json", "--fleet", ex]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let sandbox = v.as_array().unwrap().iter().find(|g| g["name"] == "tool_sandbox").unwrap();
    assert_eq!(sandbox["limits"]["memory"]["burst"], 160 << 20);
}

/// Issue 12: the fleet parser dropped the window of a group total on a
/// custom resource (`tokens = "5M/day"` became 5M with no window, counted
/// as a usage total); it is now the group's budget, with its window.
#[test]
fn a_group_total_on_a_custom_resource_keeps_its_window_as_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("llm.toml");
    std::fs::write(&file, "[groups.llm]\nextends = \"standard_agent\"\ntotals = { tokens = \"5M/day\", memory = \"2Gi\" }\n").unwrap();
    let o = allot(&["groups", "--json", "--fleet", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let llm = v.as_array().unwrap().iter().find(|g| g["name"] == "llm").unwrap();
    assert_eq!(llm["totals"]["memory"], 2u64 << 30, "{llm}");
    assert!(llm["totals"].get("tokens").is_none(), "kernel totals only: {llm}");
    let tokens = &llm["budgets"]["tokens"];
    assert_eq!(tokens["hard"], 5_000_000, "{llm}");
    assert_eq!(tokens["window"], serde_json::json!({"kind": "rolling", "length_ms": 86_400_000, "buckets": 60}), "{llm}");
    assert_eq!(tokens["text"], "5M/day", "{llm}");
    let text = stdout(&allot(&["groups", "--fleet", file.to_str().unwrap()]));
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["budget", "tokens:", "5M/day"]), "{text}");
}

#[test]
fn validate_prints_the_budgets_of_the_llm_example() {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/llm-fleet.toml");
    let o = allot(&["validate", ex]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert!(out.starts_with(&format!("{ex}: valid (1 group definition(s), 1 pool(s), 3 agent(s))\n")), "{out}");
    assert_eq!(
        lines,
        [
            "group llm:",
            "  budget tokens: 5M/day",
            "pool openai:",
            "  budget usd_micros: 50M per month from day 1 at 00:00 UTC",
            "agent planner draws on openai",
            "agent coder draws on openai",
            "agent reviewer draws on openai",
        ],
        "{out}"
    );
}

#[test]
fn validate_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/basic.toml");
    let o = allot(&["validate", ex]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("valid (1 group definition(s), 3 agent(s))"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[agents]]\nname = \"x y\"\ngroup = \"standard_agent\"\ncommand = []\n").unwrap();
    let o = allot(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml:2:8: agents[0].name: invalid agent id \"x y\""), "{err}");
    assert!(err.contains("bad.toml:4:11: agents[0].command: must name a program"), "{err}");
    assert!(err.contains("invalid: 2 error(s)"), "{err}");

    let o = allot(&["validate", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));

    let binary = dir.path().join("bin.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let o = allot(&["validate", binary.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));
}

#[test]
fn host_json_reports_this_machine() {
    let o = allot(&["host", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mem_total_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let mem = &v["resources"]["memory"];
    let total = mem["total"].as_u64().unwrap();
    assert!(total > 0 && total <= mem_total_kb * 1024, "{mem}");
    assert_eq!(mem["reserved"].as_u64().unwrap(), total / 4);
    assert_eq!(mem["allocatable"].as_u64().unwrap(), total - total / 4);
    let cpu = v["resources"]["cpu"]["total"].as_u64().unwrap();
    let online = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(cpu > 0 && cpu <= online * 1000, "cpu {cpu} vs {online} cpus");
    assert_eq!(v["resources"]["files"]["total"], 10_000);
    assert_eq!(v["resources"]["network"]["total"], 125_000_000);
}

#[test]
fn host_flags_are_validated() {
    let o = allot(&["host", "--reserve", "memory=101"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("reserved.memory: 101 is not a percentage"), "{}", stderr(&o));
    let o = allot(&["host", "--network", "fast"]);
    assert!(stderr(&o).contains("--network: \"fast\" is not a valid byte rate"), "{}", stderr(&o));
    let o = allot(&["host", "--json", "--reserve", "cpu=50", "--files", "20k"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["resources"]["files"]["total"], 20_000);
    let cpu = &v["resources"]["cpu"];
    assert_eq!(cpu["reserved"].as_u64().unwrap() * 2, cpu["total"].as_u64().unwrap());
}

#[test]
fn every_command_has_help() {
    for cmd in [vec!["--help"], vec!["groups", "--help"], vec!["host", "--help"], vec!["validate", "--help"]] {
        let o = allot(&cmd);
        assert!(o.status.success(), "{cmd:?}");
        assert!(stdout(&o).contains("Usage: allot"), "{cmd:?}: {}", stdout(&o));
    }
    let o = allot(&["budget", "--help"]);
    assert!(o.status.success() && stdout(&o).contains("Examples:\n  allot budget "), "{}", stdout(&o));
    let o = allot(&["budget", "writer", "--pool", "shared"]);
    assert_eq!(o.status.code(), Some(2), "an agent and a pool at once: {}", stderr(&o));
    let o = allot(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}
