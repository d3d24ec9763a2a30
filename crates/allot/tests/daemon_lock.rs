//! Two `allot daemon`s on one state database: the second exits nonzero,
//! naming the database and the first daemon's pid; the first runs on.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon started by this test, stopped (SIGTERM, then SIGKILL) and its cgroup root removed on drop.
struct Daemon {
    child: Child,
    cgroup_name: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The daemon removes its empty root at a clean stop; this is the net under a failed test.
        let roots = allot_sys::Roots::host();
        if let Ok(layout) = allot_sys::cgroup::Layout::discover(&roots) {
            let _ = allot_sys::cgroup::tree::CgroupRoot::create(&layout, &roots, &self.cgroup_name).and_then(|r| r.remove());
        }
    }
}

fn daemon(state: &Path, sock: &Path, cgroup_name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allot"));
    c.args(["daemon", "--cgroup-name", cgroup_name]).arg("--socket").arg(sock).arg("--state").arg(state).env("ALLOT_LOG", "warn");
    c
}

fn healthz(sock: &Path) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_and_the_first_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state.db");
    // Both daemons as one configuration would start them: the same cgroup name.
    let name = format!("allot-test-{}-lock", std::process::id());
    let (sock1, sock2) = (dir.path().join("one.sock"), dir.path().join("two.sock"));
    let first = Daemon { child: daemon(&state, &sock1, &name).spawn().unwrap(), cgroup_name: name.clone() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock1).is_err() {
        assert!(Instant::now() < deadline, "the first daemon did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut second = daemon(&state, &sock2, &name).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second daemon on the same state kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{status:?}: {err}");
    let want = format!("{} is in use by another allot (pid {})", state.display(), first.child.id());
    assert!(err.contains(&want), "the error names the state and the holder: {err}");
    assert!(!sock2.exists(), "the second daemon never listened");

    // The first runs on, still holding the lock; readers read beside it.
    let mut first = first;
    assert!(first.child.try_wait().unwrap().is_none(), "the first daemon runs on");
    assert!(healthz(&sock1).starts_with("HTTP/1.1 200"));
    let holder = std::fs::read_to_string(allot_store::Store::lock_path(&state)).unwrap();
    assert_eq!(holder.trim(), first.child.id().to_string());
    assert!(allot_store::Store::open_read_only(&state).unwrap().schema_version().is_ok());
}

/// Two daemons on different states but one cgroup root: the second is
/// refused before it recovers anything (its recovery would stop the first's
/// agents, which its store does not know), and the first's agent runs on.
#[test]
fn a_second_daemon_on_the_same_cgroup_root_is_refused_and_the_first_agents_live() {
    let roots = allot_sys::Roots::host();
    let usable = rustix::process::geteuid().is_root() && allot_sys::cgroup::Layout::discover(&roots).is_ok();
    if !usable {
        assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "ALLOT_REQUIRE_CGROUPS=1 but cgroups are unusable");
        eprintln!("skipped: needs root and cgroups");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("allot-test-{}-rootlock", std::process::id());
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, "[[agents]]\nname = \"keeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let sock1 = dir.path().join("one.sock");
    let mut cmd = daemon(&dir.path().join("one.db"), &sock1, &name);
    let first = Daemon { child: cmd.arg("--config").arg(&fleet).spawn().unwrap(), cgroup_name: name.clone() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let keeper = loop {
        let pid =
            allot_store::Store::open_read_only(&dir.path().join("one.db")).ok().and_then(|s| s.agent("keeper").ok()?.and_then(|a| a.pid));
        if let (Some(pid), true) = (pid, UnixStream::connect(&sock1).is_ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the first daemon did not start its agent");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = daemon(&dir.path().join("two.db"), &dir.path().join("two.sock"), &name).stdout(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon ran: {err}");
    assert!(err.contains("is in use by another allot") && err.contains("--cgroup-name"), "names the conflict and the way out: {err}");
    assert!(Path::new(&format!("/proc/{keeper}")).exists(), "the first daemon's agent was stopped by the second");
    // The first daemon's agent is killed with its cgroup root when the test ends.
    let store = allot_store::Store::open_read_only(&dir.path().join("one.db")).unwrap();
    let dirs = store.agent("keeper").unwrap().unwrap().cgroup_dirs();
    drop(first);
    let _ = allot_sys::cgroup::tree::kill_and_remove_dirs(&dirs, Duration::from_secs(5));
    for d in &dirs {
        if let Some(g) = d.parent() {
            let _ = std::fs::remove_dir(g);
            if let Some(r) = g.parent() {
                let _ = std::fs::remove_dir(r);
            }
        }
    }
}
