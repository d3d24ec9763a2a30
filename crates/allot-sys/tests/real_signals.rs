//! The signals-only mode (no cgroup): freeze, thaw, kill and the duty cycle
//! on real process trees found through `/proc`. Needs no privileges.
#![allow(clippy::unwrap_used)]

use allot_sys::actuate::{Actuator, SETTLE_TIMEOUT, TreeActuator};
use allot_sys::probe::{Probe, TreeProbe};
use allot_sys::spawn::spawn;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

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

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn counters(dir: &std::path::Path) -> Vec<u64> {
    // Each loop appends a byte per step: the file's size is its progress, read atomically.
    (0..3).map(|i| std::fs::metadata(dir.join(format!("c{i}"))).map_or(0, |m| m.len())).collect()
}

#[test]
fn sigstop_freezes_the_whole_tree_and_sigcont_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let script = format!("for n in 0 1 2; do (while :; do printf x >> {d}/c$n; done) & done; wait");
    let mut t = Tree::start(&script);
    let act = &mut t.act;
    assert!(wait_until(Duration::from_secs(5), || counters(tmp.path()).iter().all(|c| *c > 10)));
    let settle = act.freeze().unwrap();
    assert!(settle.started().detail.contains("SIGSTOP to 4"), "parent and three loops: {settle:?}");
    let out = settle.wait(SETTLE_TIMEOUT).unwrap();
    assert!(out.detail.contains("SIGSTOP to 4 process(es); every one stopped"), "{}", out.detail);
    for p in act.pids().unwrap() {
        let stat = std::fs::read(format!("/proc/{p}/stat")).unwrap();
        assert_eq!(allot_sys::proc::parse::stat(&stat).unwrap().state, b'T', "{p} stopped once the wait is over");
    }
    let a = counters(tmp.path());
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(a, counters(tmp.path()));
    act.thaw().unwrap();
    assert!(wait_until(Duration::from_secs(5), || counters(tmp.path()).iter().zip(&a).all(|(n, t)| n > t)));
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
    let gone = |p: &u32| {
        std::fs::read(format!("/proc/{p}/stat")).ok().and_then(|b| allot_sys::proc::parse::stat(&b)).is_none_or(|s| s.state == b'Z')
    };
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
    let stat = std::fs::read(format!("/proc/{}/stat", t.child.id())).unwrap();
    assert_eq!(allot_sys::proc::parse::stat(&stat).unwrap().state, b'T');
    t.act.thaw().unwrap();
}

#[test]
fn a_duty_cycle_throttles_a_hog_without_cgroups() {
    let mut t = Tree::start("while :; do :; done");
    t.act.set_cpu_limit(Some(300)).unwrap();
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), t.child.id());
    let mut meter = allot_core::rate::Rate::default();
    std::thread::sleep(Duration::from_millis(300));
    allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(Duration::from_secs(2));
    let m = allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms()).unwrap();
    eprintln!("duty cycle at 30 %: hog measured {m}m");
    assert!((150..=450).contains(&m), "{m}m");
}

/// Milliseconds since the Unix epoch, as the core's time.
fn now_ms() -> allot_core::Time {
    allot_core::Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}
