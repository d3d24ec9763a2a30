//! A real `allot daemon` for the containment and cycle tests: started on a
//! temp state and socket under `--cgroup-name allot-test-<pid>-<tag>`; on
//! drop SIGKILLed, everything left in its cgroups killed and every directory
//! of its cgroup root removed (every hierarchy), also when a test fails.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request over the socket: (status, body).
pub(crate) fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
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
    let status = resp.split_whitespace().nth(1).unwrap_or_else(|| panic!("no status line in {resp:?}")).parse().unwrap();
    (status, resp.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned()))
}

/// One request over the socket, its body as JSON (a body that is not JSON as a string).
pub(crate) fn call(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (st, b) = http(sock, method, path, body);
    (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// Wait (10 s at most) until agent `id` runs.
pub(crate) fn running(sock: &Path, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(sock, "GET", &format!("/v1/agents/{id}"), "").1["state"] != "running" {
        assert!(Instant::now() < deadline, "{id} does not run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The budget of `level` on `resource` as `GET /v1/budgets` shows it (null when there is none).
pub(crate) fn budget(sock: &Path, level: &str, resource: &str) -> Value {
    let (st, v) = call(sock, "GET", "/v1/budgets", "");
    assert_eq!(st, 200, "{v}");
    v["budgets"].as_array().unwrap().iter().find(|b| b["level"] == level && b["resource"] == resource).cloned().unwrap_or(Value::Null)
}

/// Whether this machine can run the test (root and cgroups); under
/// `ALLOT_REQUIRE_CGROUPS=1` their absence fails instead.
pub(crate) fn cgroups_here() -> bool {
    let ok = rustix::process::geteuid().is_root()
        && allot_sys::cgroup::Layout::discover(&allot_sys::Roots::host()).is_ok_and(|l| l.v1_dir("pids").is_some() || l.v2_dir().is_some());
    if !ok {
        assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "cgroups required (ALLOT_REQUIRE_CGROUPS=1) but missing");
        eprintln!("skipped: needs root and cgroups");
    }
    ok
}

/// The daemon's cgroup root `<own cgroup>/<name>` in every hierarchy allot uses (v1 controllers and the unified one).
pub(crate) fn cgroup_roots(name: &str) -> Vec<PathBuf> {
    let roots = allot_sys::Roots::host();
    let layout = allot_sys::cgroup::Layout::discover(&roots).unwrap();
    let mut out: Vec<PathBuf> = ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"]
        .iter()
        .filter_map(|c| layout.v1_dir(c))
        .chain(layout.v2_dir())
        .map(|own| roots.path(&own).join(name))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The subdirectories of `dir` (none if it is gone).
pub(crate) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// Agent cgroup directories (`<root>/<group>/<agent>`) under the roots.
pub(crate) fn agent_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots.iter().flat_map(|r| subdirs(r)).flat_map(|g| subdirs(&g)).collect()
}

pub(crate) struct Daemon {
    /// Arguments given beside the defaults (kept for a restart).
    pub(crate) extra: Vec<String>,
    pub(crate) child: Child,
    pub(crate) sock: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) name: String,
    pub(crate) roots: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Spawn `allot daemon` with `fleet` written to `dir/fleet.toml`, its socket and
/// state in `dir`, its cgroup root named `name`: (child, socket, state).
pub(crate) fn start_daemon(dir: &Path, fleet: &str, name: &str) -> (Child, PathBuf, PathBuf) {
    start_daemon_with(dir, fleet, name, &[])
}

/// [`start_daemon`] with more arguments.
pub(crate) fn start_daemon_with(dir: &Path, fleet: &str, name: &str, extra: &[String]) -> (Child, PathBuf, PathBuf) {
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
        .args(extra)
        .env("ALLOT_LOG", "warn")
        .spawn()
        .unwrap();
    (child, sock, state)
}

/// Start a daemon with `fleet` as its config, its cgroup root named `allot-test-<pid>-<tag>`.
pub(crate) fn launch(fleet: &str, tag: &str) -> Daemon {
    launch_in(tempfile::tempdir().unwrap(), fleet, tag)
}

/// The same, with its fleet, socket and state in `dir`.
pub(crate) fn launch_in(dir: tempfile::TempDir, fleet: &str, tag: &str) -> Daemon {
    launch_with(dir, fleet, tag, Vec::new())
}

/// The same, with more arguments to `allot daemon`.
pub(crate) fn launch_with(dir: tempfile::TempDir, fleet: &str, tag: &str, extra: Vec<String>) -> Daemon {
    let name = format!("allot-test-{}-{tag}", std::process::id());
    let (child, sock, state) = start_daemon_with(dir.path(), fleet, &name, &extra);
    let roots = cgroup_roots(&name);
    let mut d = Daemon { extra, child, sock, state, name, roots, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&d.sock).is_err() {
        assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the daemon did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn agent(&self, id: &str) -> Value {
        serde_json::from_str(&http(&self.sock, "GET", &format!("/v1/agents/{id}"), "").1).unwrap_or(Value::Null)
    }

    /// SIGKILL the daemon and reap it (its agents keep running).
    pub(crate) fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start a new daemon on the same fleet, state, socket and cgroup root
    /// (after [`Daemon::sigkill`] or [`Daemon::stop`]); returns once its socket accepts.
    pub(crate) fn restart(&mut self) {
        let fleet = std::fs::read_to_string(self._dir.path().join("fleet.toml")).unwrap();
        let (child, _, _) = start_daemon_with(self._dir.path(), &fleet, &self.name, &self.extra);
        self.child = child;
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.sock).is_err() {
            assert!(self.child.try_wait().unwrap().is_none(), "the restarted daemon exited");
            assert!(Instant::now() < deadline, "the restarted daemon did not open its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the daemon to exit (its agents keep running); SIGKILL after 15 s.
    pub(crate) fn stop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup_root(&self.roots);
    }
}

/// Kill whatever runs under a test's cgroup root and remove every directory of it (every hierarchy).
pub(crate) fn remove_cgroup_root(roots: &[PathBuf]) {
    // One agent at a time: its directories in every hierarchy are one cgroup to kill.
    let mut agents: Vec<PathBuf> =
        agent_dirs(roots).iter().filter_map(|d| roots.iter().find_map(|r| d.strip_prefix(r).ok()).map(Path::to_path_buf)).collect();
    agents.sort();
    agents.dedup();
    for rel in agents {
        let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(&rel)).collect();
        let _ = allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, Duration::from_secs(5));
    }
    for r in roots {
        for g in subdirs(r) {
            let _ = std::fs::remove_dir(g);
        }
        let _ = std::fs::remove_dir(r);
    }
}

/// Removes a test's cgroup root (and kills what runs there) when dropped, also when the test fails.
pub(crate) struct CgroupRootGuard(pub(crate) String);

impl Drop for CgroupRootGuard {
    fn drop(&mut self) {
        remove_cgroup_root(&cgroup_roots(&self.0));
    }
}

/// Stop every agent recorded in the state database and remove its cgroups
/// (and the test's group and root cgroups above them).
pub(crate) fn cleanup_state(state: &Path) {
    let Ok(store) = allot_store::Store::open_read_only(state) else { return };
    for a in store.agents().unwrap_or_default() {
        let dirs: Vec<PathBuf> =
            a.cgroup.as_array().map(|v| v.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect()).unwrap_or_default();
        for _ in 0..200 {
            let pids: Vec<u32> = dirs.iter().filter_map(|d| allot_sys::cgroup::fs::procs(d).ok()).flatten().collect();
            if pids.is_empty() {
                break;
            }
            let _ = allot_sys::signal::signal_all(&pids, rustix::process::Signal::KILL);
            std::thread::sleep(Duration::from_millis(5));
        }
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
            if let Some(group) = d.parent() {
                let _ = std::fs::remove_dir(group);
                if let Some(root) = group.parent().filter(|r| r.file_name().is_some_and(|n| n.to_string_lossy().starts_with("allot-test-")))
                {
                    let _ = std::fs::remove_dir(root);
                }
            }
        }
    }
}
