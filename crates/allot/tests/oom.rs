//! Memory limits against a real daemon and the real kernel (follow-ups of
//! issue 11): an agent killed by the kernel's OOM killer is recorded as such
//! (which limit: its own ceiling or its group's total), not as its own exit;
//! a group memory total the kernel refuses (below the members' usage) is
//! refused through the API with nothing stored or changed.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{cgroups_here, http, launch};
use serde_json::Value;
use std::time::{Duration, Instant};

const MI: u64 = 1 << 20;

fn call(sock: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (st, b) = http(sock, method, path, body);
    (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// Whether the v1 memory controller or the v2 one is there (else the test cannot run).
fn memory_cgroups_here() -> bool {
    if !cgroups_here() {
        return false;
    }
    let l = allot_sys::cgroup::Layout::discover(&allot_sys::Roots::host()).unwrap();
    let ok = l.v1_dir("memory").is_some()
        || l.v2_dir().is_some_and(|d| {
            std::fs::read_to_string(allot_sys::Roots::host().path(&d).join("cgroup.subtree_control")).is_ok_and(|c| c.contains("memory"))
        });
    if !ok {
        assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "memory cgroup required but missing");
        eprintln!("skipped: no memory controller");
    }
    ok
}

/// The `agent.exited` event of `id`, waiting up to 20 s for it.
fn exited(state: &std::path::Path, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(store) = allot_store::Store::open_read_only(state) {
            let ev = store
                .events_since(0, 100_000)
                .unwrap()
                .into_iter()
                .find(|e| e.topic.ends_with("agent.exited") && e.agent.as_deref() == Some(id));
            if let Some(e) = ev {
                return e.data;
            }
        }
        assert!(Instant::now() < deadline, "{id} did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The python that agents (running as nobody) can reach.
const PYTHON: &str = "/usr/bin/python3";

/// Kernel OOM kills are labelled as such, with the limit that caused them:
/// an agent whose memory ceiling (the backstop at its burst, 32Mi) is
/// exceeded by an allocation of 200 MB, and an agent in a group whose
/// memory total (24Mi) is exceeded, get `agent.exited` with cause
/// `oom_kill`, the limit and its value; `ps` shows them as OOM kills. An
/// agent that kills itself with SIGKILL is its own exit. Before: all three
/// were "killed by signal 9 (its own exit)".
#[test]
fn a_kernel_oom_kill_is_labelled_with_the_limit_that_caused_it() {
    if !memory_cgroups_here() || !std::path::Path::new(PYTHON).exists() {
        eprintln!("skipped: needs memory cgroups and {PYTHON}");
        return;
    }
    let d = launch("", "oomlabel");
    let group = |name: &str, body: &str| {
        let (st, v) = call(&d.sock, "POST", &format!("/v1/groups/{name}"), body);
        assert_eq!(st, 201, "{v}");
    };
    group("ceiling", r#"{"extends": "lightweight_agent", "limits": {"memory": {"soft": "8Mi", "hard": "16Mi", "burst": "32Mi"}}}"#);
    group(
        "total",
        r#"{"extends": "lightweight_agent", "limits": {"memory": {"soft": "100Mi", "hard": "200Mi"}}, "totals": {"memory": "24Mi"}}"#,
    );
    let start = |name: &str, group: &str, command: &str| {
        let body = format!(r#"{{"name": "{name}", "group": "{group}", "command": {command}}}"#);
        let (st, v) = call(&d.sock, "POST", "/v1/agents", &body);
        assert_eq!(st, 201, "{v}");
    };
    let grow = format!(r#"["{PYTHON}", "-c", "import time; x = b'\\x01' * (200 * 1024 * 1024); time.sleep(30)"]"#);
    start("big", "ceiling", &grow);
    start("crowd", "total", &grow);
    start("suicide", "lightweight_agent", r#"["sh", "-c", "sleep 0.5; kill -9 $$"]"#);

    let big = exited(&d.state, "big");
    assert_eq!(big["cause"], "oom_kill", "{big}");
    assert_eq!((big["oom"]["limit"].as_str(), big["oom"]["limit_bytes"].as_u64()), (Some("agent"), Some(32 * MI)), "{big}");
    let reason = big["reason"].as_str().unwrap();
    assert!(reason.contains("OOM killer") && reason.contains("32Mi") && !reason.contains("its own exit"), "{reason}");

    let crowd = exited(&d.state, "crowd");
    assert_eq!(crowd["cause"], "oom_kill", "{crowd}");
    assert_eq!((crowd["oom"]["limit"].as_str(), crowd["oom"]["limit_bytes"].as_u64()), (Some("group"), Some(24 * MI)), "{crowd}");
    assert!(crowd["reason"].as_str().unwrap().contains("memory total of its group total (24Mi)"), "{crowd}");

    let suicide = exited(&d.state, "suicide");
    assert_eq!(suicide["cause"], "exit", "{suicide}");
    assert_eq!(suicide["reason"], "killed by signal 9 (its own exit)", "{suicide}");
    assert!(suicide.get("oom").is_none(), "{suicide}");

    // The agent's status and `allot ps` say it too.
    let status = d.agent("big");
    assert_eq!((status["state"].as_str(), status["exit_cause"].as_str()), (Some("exited"), Some("oom_kill")), "{status}");
    assert!(status["exit"].as_str().unwrap().contains("OOM killer"), "{status}");
    assert_eq!(d.agent("suicide")["exit_cause"], "exit");
    let ps = std::process::Command::new(env!("CARGO_BIN_EXE_allot")).args(["ps", "--socket"]).arg(&d.sock).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    let line = |id: &str| ps.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} not in {ps}")).to_owned();
    assert!(line("big").contains("exited (OOM kill)"), "{ps}");
    assert!(line("suicide").contains("exited") && !line("suicide").contains("OOM"), "{ps}");
}

/// The memory total of group `group` in the kernel (v1 `memory.limit_in_bytes` or v2 `memory.max`) under the daemon's root.
fn kernel_total(name: &str, group: &str) -> Option<u64> {
    real_daemon::cgroup_roots(name).into_iter().map(|r| r.join(group)).find_map(|d| {
        ["memory.limit_in_bytes", "memory.max"].iter().find_map(|f| std::fs::read_to_string(d.join(f)).ok()?.trim().parse().ok())
    })
}

/// A daemon on the state in `dir`, its socket answering; SIGKILLed on drop.
struct Running(std::process::Child, std::path::PathBuf);

impl Running {
    fn start(dir: &std::path::Path, name: &str) -> Running {
        let (child, sock, _) = real_daemon::start_daemon(dir, "", name);
        let r = Running(child, sock);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&r.1).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not open its socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `totals.memory` of group `group` as the daemon answers it.
fn stored_total(sock: &std::path::Path, group: &str) -> Value {
    let (_, groups) = call(sock, "GET", "/v1/groups", "");
    groups.as_array().unwrap().iter().find(|g| g["name"] == group).unwrap_or_else(|| panic!("no {group}: {groups}"))["totals"]["memory"]
        .clone()
}

/// A group memory total under what its members use cannot be in force (the
/// v1 kernel answers EBUSY): the change is refused with 409 naming
/// `totals.memory` and the members' usage, and nothing changes: the group
/// as answered, the stored group (a restarted daemon has the old total),
/// the kernel's total. A total above the usage is in force. Before: 200
/// with the EBUSY in `kernel.results`, the new total stored and shown while
/// the kernel kept the old one.
#[test]
fn a_group_memory_total_under_the_members_usage_is_refused_and_nothing_changes() {
    if !memory_cgroups_here() || !std::path::Path::new(PYTHON).exists() {
        eprintln!("skipped: needs memory cgroups and {PYTHON}");
        return;
    }
    let name = format!("allot-test-{}-squeeze", std::process::id());
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let d = Running::start(dir.path(), &name);
    let body = |total: &str| {
        format!(
            r#"{{"extends": "lightweight_agent", "limits": {{"memory": {{"soft": "50Mi", "hard": "100Mi"}}}}, "totals": {{"memory": "{total}"}}}}"#
        )
    };
    let (st, v) = call(&d.1, "POST", "/v1/groups/squeeze", &body("100Mi"));
    assert_eq!(st, 201, "{v}");
    let hold = format!(r#"["{PYTHON}", "-c", "import time; x = b'\\x01' * (30 * 1024 * 1024); time.sleep(600)"]"#);
    let (st, v) = call(&d.1, "POST", "/v1/agents", &format!(r#"{{"name": "holder", "group": "squeeze", "command": {hold}}}"#));
    assert_eq!(st, 201, "{v}");
    // It holds its 30 MB (measured by the daemon) before the change.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, a) = call(&d.1, "GET", "/v1/agents/holder", "");
        if a["usage"]["memory"].as_u64().is_some_and(|m| m >= 30_000_000) {
            break;
        }
        assert!(Instant::now() < deadline, "holder does not hold 30 MB: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kernel_total(&name, "squeeze"), Some(100 * MI));

    let (st, v) = call(&d.1, "PUT", "/v1/groups/squeeze", &body("5Mi"));
    assert_eq!((st, v["error"]["field"].as_str()), (409, Some("totals.memory")), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("5.00Mi") && message.contains("its members use") && message.contains("nothing was changed"), "{message}");
    assert_eq!(stored_total(&d.1, "squeeze"), 100 * MI, "the group as answered keeps its total");
    assert_eq!(kernel_total(&name, "squeeze"), Some(100 * MI), "the kernel keeps the total");
    let (_, a) = call(&d.1, "GET", "/v1/agents/holder", "");
    assert_eq!(a["state"], "running", "{a}");
    let metrics = http(&d.1, "GET", "/metrics", "").1;
    let total = metrics.lines().find(|l| l.starts_with("allot_group_total") && l.contains("squeeze") && l.contains("memory"));
    assert!(total.is_some_and(|l| l.ends_with(&format!(" {}", 100 * MI))), "{total:?}");

    // A restarted daemon has the old total, stored.
    drop(d);
    let d = Running::start(dir.path(), &name);
    assert_eq!(stored_total(&d.1, "squeeze"), 100 * MI, "after a restart");
    let store = allot_store::Store::open_read_only(&dir.path().join("state.db")).unwrap();
    let stored = store.groups().unwrap().into_iter().find(|g| g.name == "squeeze").unwrap();
    assert_eq!(stored.totals.get("memory"), Some(&(100 * MI)), "{stored:?}");

    // Above the usage: in force.
    let (st, v) = call(&d.1, "PUT", "/v1/groups/squeeze", &body("64Mi"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(stored_total(&d.1, "squeeze"), 64 * MI);
    assert_eq!(kernel_total(&name, "squeeze"), Some(64 * MI));
    real_daemon::cleanup_state(&dir.path().join("state.db"));
}
