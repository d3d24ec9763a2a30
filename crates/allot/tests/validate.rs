//! `allot validate` reports every error of a fleet file, in file order: each
//! limit of each agent and group is checked on its own, and an agent with
//! another error (a bad priority) still has its limits checked.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const FLEET: &str = r#"[groups.alpha]
extends = "standard_agent"
limits.cpu = { soft = "100m", hard = "50m" }
limits.memory = { soft = "600Mi", hard = "500Mi" }
limits.files = { hard = 10, action = "custom" }

[[agents]]
name = "a"
group = "standard_agent"
command = ["true"]
limits.processes = { soft = 500 }
limits.memory = { hard = "100Mi", burst = "50Mi" }
limits.cpu = { action = "custom" }

[[agents]]
name = "b"
group = "lightweight_agent"
command = ["true"]
limits.memory = { soft = "1Gi" }
priority = 11

[[agents]]
name = "c"
group = "nope"
command = ["true"]
"#;

#[test]
fn validate_prints_every_limit_error_of_every_agent_and_group_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, FLEET).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let prefix = format!("{}:", file.display());
    let lines: Vec<&str> = err.lines().map(|l| l.strip_prefix(&prefix).unwrap_or(l)).collect();
    let expected = [
        "3:14: groups.alpha.limits.cpu: soft (100m) must not exceed hard (50m)",
        "4:17: groups.alpha.limits.memory: soft (600Mi) must not exceed hard (500Mi)",
        "5:16: groups.alpha.limits.files: action is custom but no custom_handler is configured for the group or agent",
        "11:20: agents[0].limits.processes: soft (500) must not exceed hard (100)",
        "12:17: agents[0].limits.memory: hard (100Mi) must not exceed burst (50Mi)",
        "13:14: agents[0].limits.cpu.action: action is custom but no custom_handler is configured for the group or agent",
        "19:17: agents[1].limits.memory: soft (1Gi) must not exceed hard (100M)",
        "20:12: agents[1].priority: invalid priority 11: use 1..10 (higher is more important)",
        "24:9: agents[2].group: unknown quota group \"nope\": known groups are lightweight_agent, standard_agent, heavy_computation_agent",
    ];
    assert_eq!(lines[..lines.len() - 1], expected, "{err}");
    assert_eq!(lines.last().copied(), Some(" invalid: 9 error(s)"), "{err}");
}
