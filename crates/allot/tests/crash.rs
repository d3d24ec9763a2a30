//! The daemon killed (SIGKILL) at awkward moments: what it acknowledged is
//! carried out by the next one on the same state. A termination in its grace
//! period is completed on its deadline; a start the store cannot record is
//! refused; nothing runs in allot's cgroups that the store does not know.
#![allow(clippy::unwrap_used)]

use allot_sys::cgroup::tree::{CgroupRoot, Dirs, V1};
use serde_json::Value;
use std::collections::BTreeMap;
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
    let (child, sock, state) = spawn_daemon(dir, fleet, name);
    Daemon { child, sock, state, name: name.to_owned() }
}

/// A daemon on the state in `dir`, once its socket answers (its recovery is done by then).
fn spawn_daemon(dir: &Path, fleet: &str, name: &str) -> (Child, PathBuf, PathBuf) {
    let (mut child, sock, state) = start_daemon(dir, fleet, name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not open its socket ({exited:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, sock, state)
}

/// A daemon on the state in `dir`, just started.
fn start_daemon(dir: &Path, fleet: &str, name: &str) -> (Child, PathBuf, PathBuf) {
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
    (child, sock, state)
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

/// The test's cgroup root, `<own cgroup>/<name>` in every hierarchy (created by the daemon, not here).
fn test_root(name: &str) -> CgroupRoot {
    let roots = allot_sys::Roots::host();
    let layout = allot_sys::cgroup::Layout::discover(&roots).unwrap();
    let mut dirs = Dirs::default();
    for c in V1::ALL {
        if let Some(own) = layout.v1_dir(c.name()) {
            dirs.v1.insert(c, roots.path(&own).join(name));
        }
    }
    if let Some(own) = layout.v2_dir() {
        dirs.v2 = Some(roots.path(&own).join(name));
    }
    CgroupRoot { dirs }
}

/// Agent cgroup directories of every hierarchy by `<group>/<agent>` (one kill per agent: a kill acts through one of them).
fn by_agent(dirs: Vec<PathBuf>) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut out: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for d in dirs {
        let key = d.iter().rev().take(2).collect::<PathBuf>();
        out.entry(key).or_default().push(d);
    }
    out
}

/// Declared before the daemons (so dropped after them): kills whatever runs
/// in the test's cgroup tree and removes it, also when the test fails.
struct TreeGuard(CgroupRoot);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        for dirs in by_agent(self.0.agent_dirs()).into_values() {
            if let Err(e) = allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, Duration::from_secs(10)) {
                eprintln!("cleanup of {dirs:?}: {e}");
            }
        }
        let _ = self.0.remove_empty_groups();
        let _ = self.0.remove();
    }
}

/// A daemon process, SIGKILLed on drop (what it started is the `TreeGuard`'s).
struct DaemonProc {
    child: Child,
}

impl DaemonProc {
    fn launch(dir: &Path, fleet: &str, name: &str) -> DaemonProc {
        let (child, _, _) = spawn_daemon(dir, fleet, name);
        DaemonProc { child }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A process the test started in a cgroup, killed (by pid) and reaped on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Started {
    /// Whether it ended within `within`.
    fn ended_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.0.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `sleep 1000` started by the test in a new agent cgroup `<group>/<agent>` of the test's tree.
fn sleeper_in(root: &CgroupRoot, group: &str, agent: &str) -> (Started, Vec<PathBuf>) {
    let cg = root.agent(group, agent).unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    let child = allot_sys::spawn::spawn(&mut cmd, Some(&cg)).unwrap();
    let dirs = cg.dirs.all().into_iter().map(Path::to_path_buf).collect();
    (Started(child), dirs)
}

fn stored_row(id: &str, state: &str, dirs: &[PathBuf]) -> allot_store::StoredAgent {
    allot_store::StoredAgent {
        id: id.into(),
        group: "standard_agent".into(),
        state: state.into(),
        pid: None,
        cgroup: serde_json::json!(dirs),
        spec: serde_json::json!({"command": ["sleep", "1000"]}),
        exit: None,
        updated_ms: 1,
    }
}

const QUIET: &str = "[policy]\nsample_interval = \"250ms\"\nterminate_grace = \"1s\"\n";

#[test]
fn an_agent_stored_as_starting_is_stopped_by_the_next_daemon() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-starting", std::process::id());
    let _guard = TreeGuard(test_root(&name));
    let roots = allot_sys::Roots::host();
    let root = CgroupRoot::create(&allot_sys::cgroup::Layout::discover(&roots).unwrap(), &roots, &name).unwrap();
    // A daemon stored the agent, spawned it, and died before storing it as running.
    let (mut proc, dirs) = sleeper_in(&root, "standard_agent", "half");
    let state = dir.path().join("state.db");
    allot_store::Store::open(&state).unwrap().put_agent(&stored_row("half", "starting", &dirs)).unwrap();
    let _d = DaemonProc::launch(dir.path(), QUIET, &name);
    assert!(proc.ended_within(Duration::from_secs(2)), "the process of an agent stored as starting still runs");
    assert!(dirs.iter().all(|d| !d.exists()), "its cgroup was removed: {dirs:?}");
    let store = allot_store::Store::open_read_only(&state).unwrap();
    assert_eq!(store.agent("half").unwrap().unwrap().state, "exited");
    let ev = store.events_since(0, 1000).unwrap();
    let e = ev.iter().find(|e| e.topic == "resource_management.agent.exited" && e.agent.as_deref() == Some("half")).expect("exit recorded");
    assert_eq!((e.data["recovered"].as_bool(), e.data["pids"].as_array().map(Vec::len)), (Some(true), Some(1)), "{e:?}");
}

#[test]
fn cgroups_no_running_agent_owns_are_stopped_removed_and_recorded() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-unknown", std::process::id());
    let _guard = TreeGuard(test_root(&name));
    let roots = allot_sys::Roots::host();
    let root = CgroupRoot::create(&allot_sys::cgroup::Layout::discover(&roots).unwrap(), &roots, &name).unwrap();
    // `ghost`: no row at all. `gone`: stored as exited, its cleanup cut short by a crash.
    let (mut ghost, ghost_dirs) = sleeper_in(&root, "standard_agent", "ghost");
    let (mut gone, gone_dirs) = sleeper_in(&root, "light_agent", "gone");
    // And a group directory left empty; `light_agent` is empty once `gone` is removed.
    let empty: Vec<PathBuf> = ["heavy_agent", "light_agent"]
        .iter()
        .flat_map(|g| root.agent_paths(g, "x"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    root.group("heavy_agent").unwrap();
    let state = dir.path().join("state.db");
    allot_store::Store::open(&state).unwrap().put_agent(&stored_row("gone", "exited", &gone_dirs)).unwrap();
    let _d = DaemonProc::launch(dir.path(), QUIET, &name);
    assert!(ghost.ended_within(Duration::from_secs(2)), "a process in a cgroup no stored agent owns still runs");
    assert!(gone.ended_within(Duration::from_secs(2)), "a process in the cgroup of an exited agent still runs");
    for d in ghost_dirs.iter().chain(&gone_dirs).chain(&empty) {
        assert!(!d.exists(), "{} was left", d.display());
    }
    let ev = allot_store::Store::open_read_only(&state).unwrap().events_since(0, 1000).unwrap();
    for who in ["ghost", "gone"] {
        let e = ev
            .iter()
            .find(|e| e.topic == "resource_management.agent.exited" && e.agent.as_deref() == Some(who))
            .unwrap_or_else(|| panic!("no exit recorded for {who}: {ev:?}"));
        assert_eq!((e.data["recovered"].as_bool(), e.data["unknown"].as_bool()), (Some(true), Some(true)), "{e:?}");
        assert_eq!(e.data["pids"].as_array().map(Vec::len), Some(1), "{e:?}");
    }
}
