//! Readings through a real `allot daemon` against the real kernel: the
//! workspace's disk usage and its enforcement, disk_io where the cgroup's
//! block counters stay 0, what an exited agent shows, the order of event
//! times, and the descriptors an agent inherits. Needs root and cgroups:
//! skipped with a printed reason elsewhere, except under
//! `ALLOT_REQUIRE_CGROUPS=1`.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{Daemon, cgroups_here, http, launch, launch_in};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Poll an agent until `ok` holds (its JSON); panics with the last answer after `secs`.
fn wait_for(d: &Daemon, id: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = d.agent(id);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} never got there: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes `du` finds under `dir` (allocated blocks), as an independent measure.
fn du_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("du").args(["-s", "-B1"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// An agent writes 25 MB into its workdir against `disk.hard = 1Mi`: it gets
/// a disk reading (within 10 % of `du`) and the violation's configured
/// action (suspend). Before disk was measured it got neither. The file is
/// written beside the workspace and moved in whole, so the reading does not
/// depend on how fast the write runs (a loaded machine once saw the agent
/// suspended at 5.5Mi, mid-write).
#[test]
fn an_agent_filling_its_workdir_gets_a_disk_reading_and_its_action() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let fleet = format!(
        r#"
[policy]
sample_interval = "500ms"
slow_every = 1
delays = {{ suspend = "1s" }}

[[agents]]
name = "writer"
group = "standard_agent"
command = ["sh", "-c", "head -c 26214400 /dev/zero > ../data.tmp && mv ../data.tmp data.bin; sleep 300"]
workdir = "{}"
user = "root"
limits.disk = {{ soft = "512Ki", hard = "1Mi", action = "suspend" }}
"#,
        ws.display()
    );
    let d = launch_in(dir, &fleet, "disk");
    let v = wait_for(&d, "writer", 30, |v| v["state"] == "suspended" && v["usage"]["disk"].as_u64().is_some_and(|b| b >= 25 << 20));
    let reading = v["usage"]["disk"].as_u64().unwrap();
    let du = du_bytes(&ws);
    assert!(reading.abs_diff(du) * 10 <= du, "allot read {reading} bytes, du {du}");
    assert_eq!(v["held_by"]["freeze"], serde_json::json!(["policy:disk"]), "{v}");
    let store = allot_store::Store::open_read_only(&d.state).unwrap();
    let history = store.history(Some("writer")).unwrap();
    assert!(history.iter().any(|r| r.resource == "disk" && r.action == "suspend" && r.outcome == "success"), "{history:?}");
}

/// An agent writing with fsync on a host whose cgroup block counters stay 0
/// (cgroup v1 blkio here) reads its disk_io from its processes'
/// `/proc/<pid>/io` and says so; it read 0 before. Where the cgroup counters
/// move, they are the source.
#[test]
fn disk_io_falls_back_to_the_processes_counters_and_names_its_source() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let fleet = format!(
        r#"
[policy]
sample_interval = "500ms"
slow_every = 1

[[agents]]
name = "io"
group = "standard_agent"
command = ["sh", "-c", "while :; do dd if=/dev/zero of=f bs=1M count=8 conv=fsync 2>/dev/null; done"]
workdir = "{}"
user = "root"
"#,
        ws.display()
    );
    let d = launch_in(dir, &fleet, "diskio");
    let v = wait_for(&d, "io", 20, |v| v["usage"]["disk_io"].as_u64().is_some_and(|r| r >= 1 << 20));
    let source = v["disk_io_source"].as_str().unwrap_or_default().to_owned();
    assert!(["proc", "blkio", "io.stat"].contains(&source.as_str()), "{v}");
    eprintln!("disk_io {} B/s from {source}", v["usage"]["disk_io"]);
    let (st, body) = http(&d.sock, "GET", "/v1/agents", "");
    assert_eq!(st, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["disk_io_source"], source.as_str(), "the list says it too");
}

/// Agents that exited (by themselves, or stopped by the operator) show no
/// usage: `ps` has no cpu for a dead agent. Meanwhile agents are suspended,
/// resumed and stopped concurrently (freezes and kills settle on blocking
/// threads while other events are published): every event's `at` is no
/// earlier than the one before it in `seq` order.
#[test]
fn exited_agents_show_no_usage_and_event_times_follow_their_order() {
    if !cgroups_here() {
        return;
    }
    let busy = r#"["sh", "-c", "while :; do :; done"]"#;
    let mut fleet = String::from("[policy]\nsample_interval = \"200ms\"\nslow_every = 1\n");
    fleet.push_str(
        r#"
[[agents]]
name = "brief"
group = "standard_agent"
command = ["timeout", "2", "sh", "-c", "while :; do :; done"]
"#,
    );
    for i in 0..4 {
        fleet.push_str(&format!("\n[[agents]]\nname = \"w{i}\"\ngroup = \"standard_agent\"\ncommand = {busy}\n"));
    }
    let d = launch(&fleet, "exited");
    let v = wait_for(&d, "brief", 20, |v| v["state"] == "exited");
    assert_eq!(v["usage"], serde_json::json!({}), "an agent that exited by itself: {v}");

    // Concurrent operator actions on four agents: freezes settle on their threads while others publish.
    std::thread::scope(|s| {
        for i in 0..4 {
            let sock = d.sock.clone();
            s.spawn(move || {
                for _ in 0..6 {
                    let _ = http(&sock, "POST", &format!("/v1/agents/w{i}/suspend"), "");
                    let _ = http(&sock, "POST", &format!("/v1/agents/w{i}/resume"), "");
                }
                let _ = http(&sock, "DELETE", &format!("/v1/agents/w{i}"), "");
            });
        }
    });
    for i in 0..4 {
        let v = wait_for(&d, &format!("w{i}"), 30, |v| v["state"] == "exited");
        assert_eq!(v["usage"], serde_json::json!({}), "an agent the operator stopped: {v}");
    }
    let ps = std::process::Command::new(env!("CARGO_BIN_EXE_allot")).args(["ps", "--json", "--socket"]).arg(&d.sock).output().unwrap();
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    for a in ps.as_array().unwrap() {
        assert!(a["usage"]["cpu"].is_null(), "a dead agent with a cpu reading in ps: {a}");
    }

    let store = allot_store::Store::open_read_only(&d.state).unwrap();
    let events = store.events_since(0, 100_000).unwrap();
    assert!(events.len() > 40, "{} events", events.len());
    for w in events.windows(2) {
        assert!(
            w[1].at_ms >= w[0].at_ms,
            "event {} ({}) at {} comes after event {} ({}) at {}",
            w[1].seq,
            w[1].topic,
            w[1].at_ms,
            w[0].seq,
            w[0].topic,
            w[0].at_ms
        );
    }
}

/// A daemon child killed (by its pid) when dropped, also when a test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon started with descriptors 3 and 4 open and inheritable (as a
/// careless parent leaves them) starts an agent whose only descriptors are
/// 0, 1 and 2, and whose `files` reading is 3.
#[test]
fn an_agent_inherits_none_of_the_daemons_extra_descriptors() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fleet = "[policy]\nslow_every = 1\n\n[[agents]]\nname = \"sleeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"300\"]\n";
    std::fs::write(dir.path().join("fleet.toml"), fleet).unwrap();
    let name = format!("allot-test-{}-fds", std::process::id());
    // Dropped after the daemon: its cgroups are removed once it is gone.
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    let sock = dir.path().join("allot.sock");
    // The shell opens 3 and 4 without close-on-exec and execs the daemon with them.
    let child = Child(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3</dev/null 4</dev/null; exec \"$0\" daemon --cgroup-name \"$1\" --config \"$2\" --socket \"$3\" --state \"$4\"")
            .arg(env!("CARGO_BIN_EXE_allot"))
            .arg(&name)
            .arg(dir.path().join("fleet.toml"))
            .arg(&sock)
            .arg(dir.path().join("state.db"))
            .env("ALLOT_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let daemon_fds = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v: Value = std::os::unix::net::UnixStream::connect(&sock)
            .ok()
            .map(|_| serde_json::from_str(&http(&sock, "GET", "/v1/agents/sleeper", "").1).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        if v["usage"]["files"].is_u64() && v["pids"].as_array().is_some_and(|p| !p.is_empty()) {
            break v;
        }
        assert!(Instant::now() < deadline, "no files reading: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let daemon = daemon_fds(child.0.id());
    assert!(daemon.contains(&"3".to_owned()) && daemon.contains(&"4".to_owned()), "the daemon holds 3 and 4: {daemon:?}");
    let pid = v["pids"][0].as_u64().unwrap() as u32;
    let mut fds = daemon_fds(pid);
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "the agent's descriptors");
    assert_eq!(v["usage"]["files"], 3, "{v}");
}
