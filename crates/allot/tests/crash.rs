//! The daemon killed (SIGKILL) at awkward moments: what it acknowledged is
//! carried out by the next one on the same state. A termination in its grace
//! period is completed on its deadline; a start the store cannot record is
//! refused; nothing runs in allot's cgroups that the store does not know.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: allot\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })
    .unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let resp = String::from_utf8_lossy(&bytes).into_owned();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, resp.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned()))
}

/// A daemon on a temp state; on drop: SIGKILLed, and every agent the store
/// knows is killed and its cgroups (and the test's root) removed.
struct Daemon {
    child: Child,
    sock: PathBuf,
    state: PathBuf,
    name: String,
}

fn launch(dir: &Path, fleet: &str, name: &str) -> Daemon {
    let fleet_file = dir.join("fleet.toml");
    std::fs::write(&fleet_file, fleet).unwrap();
    let sock = dir.join("allot.sock");
    let state = dir.join("state.db");
    let child = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["daemon", "--cgroup-name", name, "--config"])
        .arg(&fleet_file)
        .arg("--socket")
        .arg(&sock)
        .arg("--state")
        .arg(&state)
        .env("ALLOT_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child, sock, state, name: name.to_owned() }
}

impl Daemon {
    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn agent(&self, id: &str) -> Value {
        serde_json::from_str(&http(&self.sock, "GET", &format!("/v1/agents/{id}"), "").1).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
        let Ok(store) = allot_store::Store::open_read_only(&self.state) else { return };
        for a in store.agents().unwrap_or_default() {
            let dirs = a.cgroup_dirs();
            let _ = allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, Duration::from_secs(5));
            for d in &dirs {
                if let Some(group) = d.parent() {
                    let _ = std::fs::remove_dir(group);
                    if let Some(root) = group.parent().filter(|r| r.ends_with(&self.name)) {
                        let _ = std::fs::remove_dir(root);
                    }
                }
            }
        }
    }
}

fn cgroups_here() -> bool {
    let ok = rustix::process::geteuid().is_root() && Path::new("/sys/fs/cgroup/memory").exists();
    if !ok {
        assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "cgroups required (ALLOT_REQUIRE_CGROUPS=1) but missing");
        eprintln!("skipped: needs root and cgroups");
    }
    ok
}

/// An agent that ignores SIGTERM: only the kill at the end of the grace stops it.
const STUBBORN: &str = r#"
[policy]
sample_interval = "250ms"
terminate_grace = "4s"

[[agents]]
name = "stubborn"
group = "standard_agent"
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"]
"#;

#[test]
fn a_termination_in_its_grace_is_completed_after_a_daemon_sigkill() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-term", std::process::id());
    let mut d = launch(dir.path(), STUBBORN, &name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.agent("stubborn")["pids"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, body) = http(&d.sock, "POST", "/v1/agents/stubborn/terminate", "");
    assert_eq!(st, 200, "{body}");
    let acknowledged = Instant::now();
    // Killed within the grace: the kill was only a timer in the dead daemon.
    d.sigkill();
    let d2 = launch(dir.path(), STUBBORN, &name);
    let deadline = acknowledged + Duration::from_secs(4 + 10);
    loop {
        let a = d2.agent("stubborn");
        if a["state"] == "exited" {
            assert!(!a["exit"].as_str().unwrap_or("its own exit").contains("its own exit"), "killed by allot at the end of the grace: {a}");
            break;
        }
        assert!(Instant::now() < deadline, "the acknowledged termination was forgotten: {a}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(acknowledged.elapsed() >= Duration::from_secs(3), "the grace was kept, not cut short");
    let dirs = allot_store::Store::open_read_only(&d2.state).unwrap().agent("stubborn").unwrap().unwrap().cgroup_dirs();
    let left: Vec<u32> = dirs.iter().filter_map(|d| allot_sys::cgroup::fs::procs(d).ok()).flatten().collect();
    assert!(left.is_empty(), "processes left in its cgroup: {left:?}");
    drop(d);
}
