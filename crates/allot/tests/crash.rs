//! The daemon killed (SIGKILL) at awkward moments: what it acknowledged is
//! carried out by the next one on the same state. A termination in its grace
//! period is completed on its deadline; a start the store cannot record is
//! refused; nothing runs in allot's cgroups that the store does not know.
//! `fifty_sigkills_under_a_mixed_load` kills it 50 times at random moments
//! (seeded, `ALLOT_CRASH_SEED`) under starts, terminations, quota changes and
//! usage reports, and checks after each restart what was acknowledged.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use allot_sys::cgroup::tree::{CgroupRoot, Dirs, V1};
use real_daemon::{http, start_daemon};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
/// An agent drawing on a budget pool (issue 12).
const DRAWER: &str = r#"
[policy]
sample_interval = "250ms"
terminate_grace = "1s"

[pools.openai]
usd_micros = "50M/day"

[[agents]]
name = "drawer"
group = "standard_agent"
command = ["sh", "-c", "while :; do sleep 0.2; done"]
pools = ["openai"]
"#;

/// The pools an agent draws on are stored with it and restored by the next
/// daemon that takes it over: a change it stores after the restart (a quota
/// change) still carries them.
#[test]
fn the_pools_an_agent_draws_on_survive_a_daemon_sigkill() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-pools", std::process::id());
    let stored_pools = |state: &Path| {
        let row = allot_store::Store::open_read_only(state).unwrap().agent("drawer").unwrap().unwrap();
        (row.state.clone(), row.spec().unwrap().pools)
    };
    let mut d = launch(dir.path(), DRAWER, &name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.agent("drawer")["pids"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored_pools(&d.state), ("running".to_owned(), vec!["openai".to_owned()]));
    let pids = |a: &Value| a["pids"].as_array().unwrap().iter().filter_map(Value::as_u64).collect::<BTreeSet<_>>();
    let before = pids(&d.agent("drawer"));
    d.sigkill();
    let d2 = launch(dir.path(), DRAWER, &name);
    let again = d2.agent("drawer");
    assert!(!before.is_disjoint(&pids(&again)), "taken over, not started again from the fleet file: {again}");
    let (st, body) = http(&d2.sock, "PATCH", "/v1/agents/drawer/quota", r#"{"limits": {"memory": {"hard": "400Mi"}}}"#);
    assert_eq!(st, 200, "{body}");
    assert_eq!(stored_pools(&d2.state), ("running".to_owned(), vec!["openai".to_owned()]), "stored again with its pools");
    drop(d);
}

/// A group created through the API keeps its budgets (totals on custom
/// resources, with their windows) across a daemon SIGKILL.
#[test]
fn a_group_made_through_the_api_keeps_its_budgets_across_a_daemon_sigkill() {
    if !cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-group-budgets", std::process::id());
    // No agent runs: the daemons leave their cgroup root, removed at the end.
    let _guard = TreeGuard(test_root(&name));
    let mut d = launch(dir.path(), QUIET, &name);
    let body = r#"{"extends": "standard_agent", "totals": {"tokens": "5M/day", "usd_micros": {"hard": "50M", "calendar": "month", "day": 1, "tz": "+02:00"}}}"#;
    let (st, answer) = http(&d.sock, "POST", "/v1/groups/llm", body);
    assert_eq!(st, 201, "{answer}");
    d.sigkill();
    let d2 = launch(dir.path(), QUIET, &name);
    let (st, groups) = http(&d2.sock, "GET", "/v1/groups", "");
    assert_eq!(st, 200, "{groups}");
    let groups: Value = serde_json::from_str(&groups).unwrap();
    let llm = groups.as_array().unwrap().iter().find(|g| g["name"] == "llm").expect("the stored group is back");
    assert_eq!(llm["budgets"]["tokens"]["text"], "5M/day", "{llm}");
    assert_eq!(llm["budgets"]["usd_micros"]["text"], "50M per month from day 1 at 00:00 +02:00", "{llm}");
    assert!(llm["totals"].get("tokens").is_none(), "{llm}");
    drop(d);
}

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
    sock: PathBuf,
    state: PathBuf,
}

impl DaemonProc {
    fn launch(dir: &Path, fleet: &str, name: &str) -> DaemonProc {
        let (child, sock, state) = spawn_daemon(dir, fleet, name);
        DaemonProc { child, sock, state }
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

/// xorshift64*: a small seeded generator (the seed is printed, to replay the choices).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        let n = v.len() as u64;
        if n == 0 { None } else { v.get(usize::try_from(self.next() % n).unwrap_or(0)) }
    }
}

/// What happened to a request.
enum Reply {
    /// Nothing was sent: the daemon is not there.
    NotSent,
    /// Sent, and no answer came (the daemon died with it): it may or may not have been carried out.
    Lost,
    /// Answered.
    Status(u16, String),
}

fn request(sock: &Path, method: &str, path: &str, body: &str) -> Reply {
    let Ok(mut s) = UnixStream::connect(sock) else { return Reply::NotSent };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: allot\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() {
        return Reply::Lost;
    }
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    match text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()) {
        Some(code) => Reply::Status(code, text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned())),
        None => Reply::Lost,
    }
}

const ACKED: usize = 0;
const TRIED: usize = 1;

/// What the load did, and what the daemons acknowledged.
#[derive(Default)]
struct Book {
    next: u64,
    /// Agents started (acknowledged, or found running after a restart) and not terminated by the load.
    live: Vec<String>,
    /// Acknowledged terminations not yet seen completed, with when they were acknowledged.
    terminating: Vec<(String, Instant)>,
    /// Per agent, the `pids.max` values the kernel may show: the last acknowledged
    /// (or the default at start) first, then those of changes sent after it whose answer was lost.
    pids_max: BTreeMap<String, Vec<u64>>,
    /// [acknowledged, tried] per kind: start, terminate, quota, usage.
    counts: [[u64; 2]; 4],
    /// Refusals per kind and status (an agent that exited on its own, say), with the last answer.
    refused: BTreeMap<(usize, u16), (u64, String)>,
}

/// The standard group's processes burst (its hard limit): `pids.max` of a new agent.
const DEFAULT_PIDS_MAX: u64 = 100;

const COMMANDS: [&str; 4] = [
    r#"["sleep", "1000"]"#,
    r#"["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"]"#,
    r#"["sh", "-c", "sleep 1000 & wait"]"#,
    r#"["sh", "-c", "sleep 1000 & exit 0"]"#,
];

/// Starts, terminations, quota changes and usage reports until the daemon stops answering.
fn load(sock: &Path, rng: &mut Rng, book: &mut Book, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.range(0, 100);
        let kind = if book.live.len() < 3 || (roll < 30 && book.live.len() < 6) {
            0
        } else if roll < 50 {
            1
        } else if roll < 75 {
            2
        } else {
            3
        };
        book.counts[kind][TRIED] += 1;
        let reply = match kind {
            0 => {
                book.next += 1;
                let id = format!("c{}", book.next);
                let command = rng.pick(&COMMANDS).copied().unwrap_or(COMMANDS[0]);
                let body = format!(r#"{{"name":"{id}","group":"standard_agent","command":{command}}}"#);
                let reply = request(sock, "POST", "/v1/agents", &body);
                if matches!(reply, Reply::Status(200..=299, _)) {
                    book.live.push(id.clone());
                    book.pids_max.insert(id, vec![DEFAULT_PIDS_MAX]);
                }
                reply
            }
            1 => {
                let Some(id) = rng.pick(&book.live).cloned() else { continue };
                let reply = request(sock, "POST", &format!("/v1/agents/{id}/terminate"), "");
                if matches!(reply, Reply::Status(200..=299, _)) {
                    book.terminating.push((id.clone(), Instant::now()));
                    book.live.retain(|a| *a != id);
                }
                reply
            }
            2 => {
                let Some(id) = rng.pick(&book.live).cloned() else { continue };
                let n = rng.range(50, 400);
                let body = format!(r#"{{"limits":{{"processes":{{"hard":{n},"burst":{n}}}}}}}"#);
                let reply = request(sock, "PATCH", &format!("/v1/agents/{id}/quota"), &body);
                let possible = book.pids_max.entry(id).or_default();
                match reply {
                    Reply::Status(200..=299, _) => *possible = vec![n],
                    Reply::Lost => possible.push(n),
                    _ => {}
                }
                reply
            }
            _ => {
                let Some(id) = rng.pick(&book.live).cloned() else { continue };
                let body = format!(r#"{{"resource":"tokens","value":{}}}"#, rng.range(0, 100_000));
                request(sock, "POST", &format!("/v1/agents/{id}/usage"), &body)
            }
        };
        match reply {
            Reply::Status(200..=299, _) => book.counts[kind][ACKED] += 1,
            Reply::Status(code, body) => {
                let r = book.refused.entry((kind, code)).or_default();
                r.0 += 1;
                r.1 = body;
            }
            Reply::NotSent | Reply::Lost => return,
        }
        std::thread::sleep(Duration::from_millis(rng.range(5, 40)));
    }
}

/// An exited agent's cgroup made again with a process in it (the test's, killed on drop).
fn plant(root: &CgroupRoot, state: &Path) -> Option<(String, Started)> {
    let store = allot_store::Store::open_read_only(state).unwrap();
    let gone = store.agents().unwrap().into_iter().find(|a| a.state == "exited" && a.cgroup_dirs().iter().all(|d| !d.exists()))?;
    let (p, _) = sleeper_in(root, &gone.group, &gone.id);
    Some((gone.id, p))
}

/// The agents the store knows as not exited, with their cgroup directories.
fn running(state: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let store = allot_store::Store::open_read_only(state).unwrap();
    store.agents().unwrap().into_iter().filter(|a| a.state != "exited").map(|a| (a.id.clone(), a.cgroup_dirs())).collect()
}

/// (a) processes in allot's cgroups that no stored running agent owns, (d) orphan agent cgroups.
fn unowned(root: &CgroupRoot, state: &Path) -> Vec<String> {
    let owned: BTreeSet<PathBuf> = running(state).into_values().flatten().collect();
    let mut problems = Vec::new();
    for d in root.agent_dirs() {
        if !owned.contains(&d) {
            let pids = allot_sys::cgroup::fs::procs(&d).unwrap_or_default();
            let what = if pids.is_empty() { "(d) an orphan cgroup" } else { "(a) processes no stored running agent owns" };
            problems.push(format!("{what}: {} {pids:?}", d.display()));
        }
    }
    // Nothing runs in the root or group directories themselves.
    let groups: Vec<PathBuf> =
        root.dirs.all().into_iter().flat_map(|r| std::fs::read_dir(r).into_iter().flatten().flatten().map(|e| e.path())).collect();
    for d in root.dirs.all().into_iter().map(Path::to_path_buf).chain(groups.into_iter().filter(|p| p.is_dir())) {
        let pids = allot_sys::cgroup::fs::procs(&d).unwrap_or_default();
        if !pids.is_empty() {
            problems.push(format!("(a) processes outside any agent cgroup: {} {pids:?}", d.display()));
        }
    }
    problems
}

/// (b) acknowledged terminations not completed: the agent not exited, or processes left in its cgroup.
fn unfinished(state: &Path, id: &str) -> Option<String> {
    let a = allot_store::Store::open_read_only(state).unwrap().agent(id).unwrap()?;
    let left: Vec<u32> = a.cgroup_dirs().iter().filter_map(|d| allot_sys::cgroup::fs::procs(d).ok()).flatten().collect();
    (a.state != "exited" || !left.is_empty()).then(|| format!("{id}: state {}, pids left {left:?}", a.state))
}

/// (c) acknowledged quota changes not in force: `pids.max` of a running agent not what the last acknowledged change set.
fn quota_not_in_force(state: &Path, book: &Book) -> Vec<String> {
    let now_running = running(state);
    let mut problems = Vec::new();
    for (id, possible) in &book.pids_max {
        let Some(dirs) = now_running.get(id) else { continue };
        let Some(file) = dirs.iter().map(|d| d.join("pids.max")).find(|f| f.exists()) else { continue };
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let value = text.trim().parse::<u64>().ok();
        if !value.is_some_and(|v| possible.contains(&v)) && running(state).contains_key(id) {
            problems.push(format!("(c) {id}: {} is {:?}, acknowledged {possible:?}", file.display(), text.trim()));
        }
    }
    problems
}

/// (e) `PRAGMA integrity_check`.
fn integrity(state: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap()
}

/// Wait until `problems` is empty (what recovery left stays; what the new daemon is still finishing goes).
fn settles(within: Duration, mut problems: impl FnMut() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let p = problems();
        if p.is_empty() || Instant::now() > deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MIXED: &str = r#"
[policy]
sample_interval = "250ms"
terminate_grace = "1s"
"#;

const GRACE: Duration = Duration::from_secs(1);
const MARGIN: Duration = Duration::from_secs(5);

#[test]
fn fifty_sigkills_under_a_mixed_load() {
    if !cgroups_here() {
        return;
    }
    let seed = std::env::var("ALLOT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1);
    println!("crash seed {seed} (ALLOT_CRASH_SEED={seed} replays the choices; the timing is the machine's)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-crash-mixed", std::process::id());
    let root = test_root(&name);
    let _guard = TreeGuard(root.clone());
    let started = Instant::now();
    let mut daemon = DaemonProc::launch(dir.path(), MIXED, &name);
    let mut book = Book::default();
    for round in 1..=50 {
        let before = book.counts;
        let stop = Arc::new(AtomicBool::new(false));
        let load_for = Duration::from_millis(rng.range(100, 1500));
        let (sock, flag, mut load_rng, mut b) = (daemon.sock.clone(), Arc::clone(&stop), Rng(rng.next() | 1), std::mem::take(&mut book));
        let load = std::thread::spawn(move || {
            load(&sock, &mut load_rng, &mut b, &flag);
            b
        });
        std::thread::sleep(load_for);
        daemon.sigkill();
        stop.store(true, Ordering::Relaxed);
        book = load.join().unwrap();
        let state = daemon.state.clone();
        let last = allot_store::Store::open_read_only(&state).unwrap().last_seq().unwrap();
        // Rounds 5, 15, ...: what a SIGKILL between an agent's exit being stored and the kill of what
        // its leader left behind leaves (too short a window to hit by chance): an exited agent's cgroup
        // with a process in it.
        let planted = if round % 10 == 5 { plant(&root, &state) } else { None };
        // A quarter of the rounds also kill the next daemon while it starts (recovery, takeover).
        let early = (rng.range(0, 4) == 0).then(|| Duration::from_millis(rng.range(0, 300)));
        if let Some(after) = early {
            let (mut child, _, _) = start_daemon(dir.path(), MIXED, &name);
            std::thread::sleep(after);
            let _ = child.kill();
            let _ = child.wait();
        }
        let t = Instant::now();
        daemon = DaemonProc::launch(dir.path(), MIXED, &name);
        let ready = Instant::now();
        let restart = ready - t;

        let problems = settles(Duration::from_secs(3), || unowned(&root, &state));
        assert!(problems.is_empty(), "round {round} (seed {seed}): recovery left {problems:#?}");
        if let Some((id, mut p)) = planted {
            assert!(p.ended_within(Duration::from_secs(2)), "round {round}: the process left in {id}'s cgroup still runs");
        }
        let terminations = book.terminating.len();
        for (id, acked) in std::mem::take(&mut book.terminating) {
            let deadline = (acked + GRACE).max(ready) + MARGIN;
            let left = settles(deadline.saturating_duration_since(Instant::now()), || unfinished(&state, &id).into_iter().collect());
            assert!(
                left.is_empty(),
                "round {round} (seed {seed}): (b) an acknowledged termination not completed within grace + {MARGIN:?}: {left:?}"
            );
        }
        let problems = quota_not_in_force(&state, &book);
        assert!(problems.is_empty(), "round {round} (seed {seed}): {problems:#?}");
        let check = integrity(&state);
        assert_eq!(check, "ok", "round {round} (seed {seed}): (e) integrity_check");

        // What runs now: the load goes on with it (agents whose start was lost, but which run, included).
        let now_running = running(&state);
        book.live.retain(|id| now_running.contains_key(id));
        for id in now_running.keys() {
            if !book.live.contains(id) {
                book.live.push(id.clone());
                book.pids_max.entry(id.clone()).or_insert_with(|| vec![DEFAULT_PIDS_MAX]);
            }
        }
        book.pids_max.retain(|id, _| now_running.contains_key(id));
        let recovered: Vec<Value> = allot_store::Store::open_read_only(&state)
            .unwrap()
            .events_since(last, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.data["recovered"] == true)
            .map(|e| e.data)
            .collect();
        let unknown = recovered.iter().filter(|e| e["unknown"] == true).count();
        let d = |k: usize| format!("{}/{}", book.counts[k][ACKED] - before[k][ACKED], book.counts[k][TRIED] - before[k][TRIED]);
        println!(
            "round {round:2}: load {:4} ms; acked/tried start {} terminate {} quota {} usage {}; {}restart {:3} ms; recovered {} ({unknown} unknown cgroups); {} running, {terminations} terminations completed; (a)-(e) ok",
            load_for.as_millis(),
            d(0),
            d(1),
            d(2),
            d(3),
            early.map_or_else(String::new, |e| format!("next daemon killed {} ms into its start; ", e.as_millis())),
            restart.as_millis(),
            recovered.len(),
            now_running.len(),
        );
    }
    let c = book.counts;
    println!(
        "50 rounds in {:.1} s (seed {seed}); acknowledged: {} starts, {} terminations, {} quota changes, {} usage reports; refused (kind, status): {:?}",
        started.elapsed().as_secs_f64(),
        c[0][ACKED],
        c[1][ACKED],
        c[2][ACKED],
        c[3][ACKED],
        book.refused
    );
    // Refusals are of agents that exited on their own (404/409), never of the daemon (503: unrecorded, 500).
    assert!(book.refused.keys().all(|(_, code)| *code < 500), "the daemon failed requests: {:?}", book.refused);
}
