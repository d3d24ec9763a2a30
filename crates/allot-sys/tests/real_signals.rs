//! The signals-only mode (no cgroup): freeze, thaw, kill and the duty cycle
//! on real process trees found through `/proc`. Needs no privileges.
#![allow(clippy::unwrap_used)]

mod common;

use allot_sys::actuate::{Actuator, SETTLE_TIMEOUT, TreeActuator};
use allot_sys::probe::TreeProbe;
use allot_sys::spawn::spawn;
use common::{Loops, millicores, proc_state, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Kills the tree and reaps the child when the test ends, also on failure.
struct Tree {
    act: TreeActuator,
    child: std::process::Child,
}

impl Tree {
    fn start(script: &str) -> Tree {
        let child = spawn(Command::new("sh").args(["-c", script]), None).unwrap();
        let act = TreeActuator::new(PathBuf::from("/proc"), child.id());
        Tree { act, child }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.act.kill().and_then(|s| s.wait(SETTLE_TIMEOUT));
        let _ = self.child.wait();
    }
}

#[test]
fn sigstop_freezes_the_whole_tree_and_sigcont_resumes_it() {
    let loops = Loops::new();
    let mut t = Tree::start(&loops.script());
    let act = &mut t.act;
    assert!(loops.running());
    let settle = act.freeze().unwrap();
    assert!(settle.started().detail.contains("SIGSTOP to 4"), "parent and three loops: {settle:?}");
    let out = settle.wait(SETTLE_TIMEOUT).unwrap();
    assert!(out.detail.contains("SIGSTOP to 4 process(es); every one stopped"), "{}", out.detail);
    for p in act.pids().unwrap() {
        assert_eq!(proc_state(p).unwrap(), b'T', "{p} stopped once the wait is over");
    }
    let stopped = loops.assert_stopped();
    act.thaw().unwrap();
    assert!(loops.resumed_after(&stopped));
}

#[test]
fn the_tree_is_killed_even_while_it_forks() {
    let mut t = Tree::start("for i in $(seq 1 30); do sleep 100 & done; while :; do sleep 100 & sleep 0.05; done");
    assert!(wait_until(Duration::from_secs(5), || t.act.pids().unwrap().len() > 20));
    let seen = t.act.pids().unwrap();
    let settle = t.act.kill().unwrap();
    assert!(!settle.is_done(), "the call signals once and leaves the wait to the settle");
    let out = settle.wait(SETTLE_TIMEOUT).unwrap();
    assert!(out.detail.ends_with("tree empty"), "{}", out.detail);
    assert!(t.act.pids().unwrap().is_empty());
    let _ = t.child.wait();
    let gone = |p: &u32| proc_state(*p).is_none_or(|s| s == b'Z');
    // Orphans are reparented and reaped by init; give it a moment.
    assert!(wait_until(Duration::from_secs(2), || seen.iter().all(gone)), "{:?}", seen.iter().filter(|p| !gone(p)).collect::<Vec<_>>());
}

#[test]
fn freezing_a_throttled_tree_stops_the_duty_cycle_for_good() {
    let mut t = Tree::start("while :; do :; done");
    t.act.set_cpu_limit(Some(500)).unwrap();
    std::thread::sleep(Duration::from_millis(130));
    let settle = t.act.freeze().unwrap();
    assert!(!settle.is_done());
    settle.wait(SETTLE_TIMEOUT).unwrap();
    // Longer than a duty period: no SIGCONT of the cycle undoes the freeze.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(proc_state(t.child.id()).unwrap(), b'T');
    t.act.thaw().unwrap();
}

#[test]
fn a_duty_cycle_throttles_a_hog_without_cgroups() {
    let mut t = Tree::start("while :; do :; done");
    t.act.set_cpu_limit(Some(300)).unwrap();
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), t.child.id());
    let m = millicores(&mut probe, Duration::from_millis(300), Duration::from_secs(2));
    eprintln!("duty cycle at 30 %: hog measured {m}m");
    assert!((150..=450).contains(&m), "{m}m");
}

/// An agent inherits none of allot's descriptors beyond 0, 1 and 2 (even
/// one opened without close-on-exec), and runs with no_new_privs.
#[test]
fn agents_get_only_stdio_and_no_new_privs() {
    use std::os::fd::IntoRawFd;
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::open("/dev/null").unwrap();
    // A descriptor without O_CLOEXEC, as a careless library or a parent shell may leave.
    let raw = rustix::io::dup(&f).unwrap().into_raw_fd();
    let out = dir.path().join("out");
    let script = format!("ls /proc/self/fd > {0}.fds; grep NoNewPrivs /proc/self/status > {0}.nnp", out.display());
    let mut child = spawn(Command::new("sh").args(["-c", &script]), None).unwrap();
    assert!(child.wait().unwrap().success());
    // SAFETY: `raw` is the descriptor we just duplicated and own.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    let fds: Vec<String> = std::fs::read_to_string(dir.path().join("out.fds")).unwrap().split_whitespace().map(str::to_owned).collect();
    // ls itself opens one descriptor for /proc/self/fd.
    let inherited: Vec<&String> = fds.iter().filter(|fd| !["0", "1", "2"].contains(&fd.as_str())).collect();
    assert!(inherited.len() <= 1 && !fds.contains(&raw.to_string()), "the agent inherited {fds:?} (allot's fd {raw})");
    assert_eq!(std::fs::read_to_string(dir.path().join("out.nnp")).unwrap().split_whitespace().last(), Some("1"));
}
