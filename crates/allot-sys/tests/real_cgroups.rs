//! The kernel boundary against the real kernel: cgroups created beneath our
//! own, real processes, real limits. Skipped with a printed reason where the
//! machine cannot create cgroups, except under `ALLOT_REQUIRE_CGROUPS=1`.
//! Every test removes the cgroups and processes it created, also on failure.
#![allow(clippy::unwrap_used)]

use allot_sys::Roots;
use allot_sys::SysError;
use allot_sys::actuate::{Actuator, CgroupActuator, SETTLE_TIMEOUT, TreeActuator};
use allot_sys::cgroup::tree::{AgentCgroup, CgroupRoot, V1, kill_and_remove_dirs};
use allot_sys::cgroup::{Layout, v1, v2};
use allot_sys::notify::{Notice, Notifier};
use allot_sys::probe::{Probe, TreeProbe};
use allot_sys::spawn::spawn;
use rustix::process::{Pid, test_kill_process};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn require() -> bool {
    std::env::var("ALLOT_REQUIRE_CGROUPS").is_ok_and(|v| v == "1")
}

/// A root cgroup for one test, removed with everything in it on drop.
struct Fixture {
    root: CgroupRoot,
    agents: Vec<AgentCgroup>,
    children: Vec<Child>,
    groups: Vec<String>,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        let roots = Roots::host();
        let name = format!("allot-test-{}-{test}", std::process::id());
        let layout = match Layout::discover(&roots) {
            Ok(l) => l,
            Err(e) => return skip(&format!("cannot read the cgroup layout: {e}")),
        };
        match CgroupRoot::create(&layout, &roots, &name) {
            Ok(root) => Some(Fixture { root, agents: Vec::new(), children: Vec::new(), groups: Vec::new() }),
            Err(e) => skip(&format!("cannot create cgroups here: {e}")),
        }
    }

    fn agent(&mut self, name: &str) -> AgentCgroup {
        let cg = self.root.agent("g", name).unwrap();
        if !self.groups.contains(&"g".to_owned()) {
            self.groups.push("g".into());
        }
        self.agents.push(cg.clone());
        cg
    }

    fn spawn(&mut self, cg: &AgentCgroup, script: &str) -> u32 {
        let child = spawn(Command::new("sh").args(["-c", script]), Some(cg)).unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for cg in &self.agents {
            let _ = CgroupActuator::new(cg.clone()).kill().and_then(|s| s.wait(SETTLE_TIMEOUT));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cg in &self.agents {
            let _ = cg.remove();
        }
        for g in &self.groups {
            if let Ok(d) = self.root.group(g) {
                let _ = d.remove();
            }
        }
        if let Err(e) = self.root.remove() {
            eprintln!("warning: could not remove test cgroup: {e}");
        }
    }
}

fn skip(why: &str) -> Option<Fixture> {
    assert!(!require(), "ALLOT_REQUIRE_CGROUPS=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

fn alive(pid: u32) -> bool {
    let Some(p) = Pid::from_raw(pid as i32) else {
        return false;
    };
    if test_kill_process(p).is_err() {
        return false;
    }
    // A zombie still answers kill(0): look at its state.
    std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|b| allot_sys::proc::parse::stat(&b)).is_some_and(|s| s.state != b'Z')
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

#[test]
fn spawned_commands_start_inside_the_agent_cgroup() {
    let Some(mut fx) = Fixture::new("spawn") else {
        return;
    };
    let cg = fx.agent("a");
    let pid = fx.spawn(&cg, "sleep 30");
    for d in cg.dirs.all() {
        let procs = allot_sys::cgroup::fs::procs(d).unwrap();
        assert!(procs.contains(&pid), "{pid} not in {}", d.display());
    }
}

#[test]
fn a_cpu_hog_is_held_to_its_quota() {
    let Some(mut fx) = Fixture::new("cpu") else {
        return;
    };
    let cg = fx.agent("hog");
    let mut act = CgroupActuator::new(cg.clone());
    let out = act.set_cpu_limit(Some(200)).unwrap();
    assert!(!out.writes.is_empty());
    let pid = fx.spawn(&cg, "while :; do :; done");
    // Measured independently of the cgroup: utime+stime through /proc.
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), pid);
    let mut meter = allot_core::rate::Rate::default();
    std::thread::sleep(Duration::from_millis(300));
    allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(Duration::from_secs(3));
    let m = allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms()).unwrap();
    eprintln!("cpu hog limited to 200m measured {m}m through /proc");
    assert!((160..=240).contains(&m), "measured {m}m, wanted 200m within 20 %");
    // Cleared, it runs free.
    act.set_cpu_limit(None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(Duration::from_secs(1));
    let free = allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms()).unwrap();
    assert!(free > 400, "unlimited hog at {free}m");
}

#[test]
fn an_allocator_is_killed_at_its_memory_ceiling_in_its_own_group_only() {
    let Some(mut fx) = Fixture::new("mem") else {
        return;
    };
    let victim = fx.agent("alloc");
    let bystander = fx.agent("bystander");
    let mut act = CgroupActuator::new(victim.clone());
    act.set_memory_max(Some(64 << 20)).unwrap();
    let calm = fx.spawn(&bystander, "sleep 30");
    let pid = fx.spawn(&victim, "exec python3 -c 'import time; x = b\"\\x01\" * (200 * 1024 * 1024); time.sleep(30)'");
    let child = fx.children.iter_mut().find(|c| c.id() == pid).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    if let Some(d) = victim.v1(V1::Memory) {
        assert_eq!(v1::memory::oom_kills(d).unwrap(), 1);
        assert_eq!(v1::memory::oom_kills(bystander.v1(V1::Memory).unwrap()).unwrap(), 0);
    }
    assert!(alive(calm), "the bystander survived");
}

#[test]
fn a_fork_loop_stops_at_pids_max_and_the_parent_lives() {
    let Some(mut fx) = Fixture::new("pids") else {
        return;
    };
    let cg = fx.agent("forker");
    let mut act = CgroupActuator::new(cg.clone());
    act.set_pids_max(Some(10)).unwrap();
    // A parent that survives its refused forks (dash would exit on the first).
    let script = "exec python3 -c 'import os, time\nfor i in range(40):\n    try:\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n    except OSError:\n        pass\ntime.sleep(30)'";
    let pid = fx.spawn(&cg, script);
    let dir = cg.v1(V1::Pids).map(PathBuf::from).or_else(|| cg.v2().map(PathBuf::from)).unwrap();
    assert!(wait_until(Duration::from_secs(5), || v1::pids::refused(&dir).unwrap_or(0) > 0), "no fork was refused");
    let current = v1::pids::current(&dir).unwrap();
    assert!(current <= 10, "pids.current {current}");
    assert!(alive(pid), "the parent survives its refused forks");
}

fn counters(dir: &std::path::Path) -> Vec<u64> {
    // Each loop appends a byte per step: the file's size is its progress, read atomically.
    (0..3).map(|i| std::fs::metadata(dir.join(format!("c{i}"))).map_or(0, |m| m.len())).collect()
}

fn freeze_thaw(fx: &mut Fixture, cg: AgentCgroup) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let script = format!("for n in 0 1 2; do (while :; do printf x >> {d}/c$n; done) & done; wait");
    fx.spawn(&cg, &script);
    assert!(wait_until(Duration::from_secs(5), || counters(tmp.path()).iter().all(|c| *c > 10)));
    let mut act = CgroupActuator::new(cg.clone());
    let start = Instant::now();
    let settle = act.freeze().unwrap();
    let call = start.elapsed();
    assert!(!settle.is_done(), "the call only writes: {settle:?}");
    assert_eq!(settle.started().writes.len(), 1);
    let out = settle.wait(SETTLE_TIMEOUT).unwrap();
    eprintln!("freeze: call {call:?}, settled after {:?}: {:?}; {}", start.elapsed(), out.writes, out.detail);
    match cg.v2() {
        Some(d) => assert!(v2::core::is_frozen(d).unwrap()),
        None => assert!(v1::freezer::is_frozen(cg.v1(V1::Freezer).unwrap()).unwrap()),
    }
    let a = counters(tmp.path());
    std::thread::sleep(Duration::from_millis(400));
    let b = counters(tmp.path());
    assert_eq!(a, b, "no progress while frozen");
    act.thaw().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || counters(tmp.path()).iter().zip(&b).all(|(now, then)| now > then)),
        "every process resumed"
    );
    // Stopped before the counters' directory goes away.
    act.kill().unwrap().wait(SETTLE_TIMEOUT).unwrap();
}

#[test]
fn freeze_stops_every_process_and_thaw_resumes_them() {
    let Some(mut fx) = Fixture::new("freeze") else {
        return;
    };
    let cg = fx.agent("busy");
    freeze_thaw(&mut fx, cg);
}

#[test]
fn the_v1_freezer_alone_also_freezes_and_thaws() {
    let Some(mut fx) = Fixture::new("freeze1") else {
        return;
    };
    let mut cg = fx.agent("busy");
    if cg.v1(V1::Freezer).is_none() {
        assert!(!require() || cg.v2().is_some(), "no freezer at all");
        eprintln!("skipped: no v1 freezer on this host");
        return;
    }
    cg.dirs.v2 = None;
    fx.agents.push(cg.clone());
    freeze_thaw(&mut fx, cg);
}

fn kill_everything(fx: &mut Fixture, cg: AgentCgroup) {
    let mut act = CgroupActuator::new(cg.clone());
    act.set_pids_max(Some(60)).unwrap();
    fx.spawn(&cg, "while :; do sleep 100 & done 2>/dev/null");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() > 20));
    let seen = cg.pids().unwrap();
    let settle = act.kill().unwrap();
    assert!(!settle.is_done(), "the call only writes: {settle:?}");
    let out = settle.wait(SETTLE_TIMEOUT).unwrap();
    eprintln!("kill: {} ({} writes)", out.detail, out.writes.len());
    assert!(cg.pids().unwrap().is_empty());
    for c in &mut fx.children {
        let _ = c.wait();
    }
    let survivors: Vec<_> = seen.into_iter().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "{survivors:?}");
}

#[test]
fn kill_leaves_no_process_even_while_the_tree_forks() {
    let Some(mut fx) = Fixture::new("kill") else {
        return;
    };
    let cg = fx.agent("forker");
    kill_everything(&mut fx, cg);
}

#[test]
fn kill_through_the_v1_freezer() {
    let Some(mut fx) = Fixture::new("kill1") else {
        return;
    };
    let mut cg = fx.agent("forker");
    if cg.v1(V1::Freezer).is_none() {
        eprintln!("skipped: no v1 freezer on this host");
        return;
    }
    cg.dirs.v2 = None;
    fx.agents.push(cg.clone());
    kill_everything(&mut fx, cg);
}

#[test]
fn a_frozen_agent_can_be_killed_through_v2_and_through_the_v1_freezer() {
    let Some(mut fx) = Fixture::new("killfrozen") else {
        return;
    };
    for (name, v1_only) in [("both", false), ("v1", true)] {
        let mut cg = fx.agent(name);
        if v1_only {
            if cg.v1(V1::Freezer).is_none() {
                continue;
            }
            cg.dirs.v2 = None;
            fx.agents.push(cg.clone());
        }
        let pid = fx.spawn(&cg, "sleep 100 & sleep 100 & wait");
        assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() == 3));
        let mut act = CgroupActuator::new(cg.clone());
        act.freeze().unwrap().wait(SETTLE_TIMEOUT).unwrap();
        let out = act.kill().unwrap().wait(SETTLE_TIMEOUT).unwrap();
        eprintln!("kill of a frozen agent ({name}): {}", out.detail);
        assert!(cg.pids().unwrap().is_empty(), "{name}");
        let child = fx.children.iter_mut().find(|c| c.id() == pid).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(9), "{name}");
    }
}

#[test]
fn kill_and_remove_empties_and_removes_every_directory() {
    let Some(mut fx) = Fixture::new("killrm") else {
        return;
    };
    let cg = fx.agent("forker");
    CgroupActuator::new(cg.clone()).set_pids_max(Some(40)).unwrap();
    let pid = fx.spawn(&cg, "while :; do sleep 100 & done 2>/dev/null");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() > 10));
    let out = cg.kill_and_remove(SETTLE_TIMEOUT).unwrap();
    eprintln!("kill_and_remove: {}", out.detail);
    for d in cg.dirs.all() {
        assert!(!d.exists(), "{} still there", d.display());
    }
    for c in &mut fx.children {
        let _ = c.wait();
    }
    assert!(!alive(pid));
}

#[test]
fn kill_and_remove_on_stored_v1_paths_goes_through_the_freezer() {
    let Some(mut fx) = Fixture::new("killrm1") else {
        return;
    };
    let cg = fx.agent("leftover");
    if cg.v1(V1::Freezer).is_none() {
        eprintln!("skipped: no v1 freezer on this host");
        return;
    }
    let pid = fx.spawn(&cg, "sleep 100 & sleep 100 & wait");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() == 3));
    // Only the v1 paths, as a store of an earlier run would hold them (plus one already gone).
    let mut dirs: Vec<PathBuf> = cg.dirs.v1.values().cloned().collect();
    dirs.push(cg.v1(V1::Freezer).unwrap().join("already-gone"));
    let (out, pids) = kill_and_remove_dirs(&dirs, SETTLE_TIMEOUT).unwrap();
    eprintln!("kill_and_remove_dirs: {} {:?}", out.detail, out.writes);
    assert!(out.writes.iter().any(|w| w.value == "FROZEN") && out.writes.iter().any(|w| w.value == "THAWED"), "{out:?}");
    assert!(pids.contains(&pid) && pids.len() >= 3, "{pids:?}");
    for d in &dirs {
        assert!(!d.exists(), "{} still there", d.display());
    }
    for c in &mut fx.children {
        let _ = c.wait();
    }
    assert!(!alive(pid));
}

#[test]
fn a_kill_that_cannot_finish_times_out_naming_the_processes_left() {
    let Some(mut fx) = Fixture::new("killtimeout") else {
        return;
    };
    let cg = fx.agent("frozen");
    let Some(freezer) = cg.v1(V1::Freezer).map(PathBuf::from) else {
        eprintln!("skipped: no v1 freezer on this host");
        return;
    };
    let pid = fx.spawn(&cg, "exec sleep 100");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap() == [pid]));
    // A task frozen by the v1 freezer does not die of SIGKILL until thawed: a tree kept alive.
    v1::freezer::request_freeze(&freezer).unwrap();
    assert!(wait_until(Duration::from_secs(5), || v1::freezer::is_frozen(&freezer).unwrap()));
    let settle = TreeActuator::new(PathBuf::from("/proc"), pid).kill().unwrap();
    assert!(!settle.is_done());
    let start = Instant::now();
    let e = settle.wait(Duration::from_millis(50)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(matches!(e, SysError::Timeout { what: "kill", .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("kill did not finish within 50ms: processes [{pid}] still present"));
    // Thawed, the pending SIGKILL lands.
    v1::freezer::thaw(&freezer).unwrap();
    let child = fx.children.iter_mut().find(|c| c.id() == pid).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

#[test]
fn v2_events_report_frozen_and_empty() {
    let Some(mut fx) = Fixture::new("events") else {
        return;
    };
    let cg = fx.agent("short");
    let Some(v2dir) = cg.v2().map(PathBuf::from) else {
        assert!(!require() || Layout::discover(&Roots::host()).unwrap().v2_dir().is_none(), "v2 mounted but unused");
        eprintln!("skipped: no cgroup v2 hierarchy");
        return;
    };
    let (notifier, mut rx) = Notifier::start().unwrap();
    notifier.cgroup_events("short", &v2dir).unwrap();
    let pid = fx.spawn(&cg, "sleep 0.5");
    notifier.process_exit("short", pid, Some(&v2dir)).unwrap();
    let rt = runtime();
    let mut got = Vec::new();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some((agent, n))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            assert_eq!(agent, "short");
            got.push(n);
            let empty = got.iter().any(|n| matches!(n, Notice::CgroupEvents(e) if !e.populated));
            if empty && got.contains(&Notice::Exited { pid }) {
                break;
            }
        }
    });
    assert!(got.iter().any(|n| matches!(n, Notice::CgroupEvents(e) if !e.populated)), "{got:?}");
    assert!(got.contains(&Notice::Exited { pid }), "{got:?}");
}

#[test]
fn a_v1_memory_threshold_notification_arrives_when_a_child_crosses_it() {
    let Some(mut fx) = Fixture::new("threshold") else {
        return;
    };
    let cg = fx.agent("grower");
    let Some(dir) = cg.v1(V1::Memory).map(PathBuf::from) else {
        eprintln!("skipped: no v1 memory controller");
        return;
    };
    let (notifier, mut rx) = Notifier::start().unwrap();
    notifier.memory_threshold("grower", &dir, 32 << 20).unwrap();
    fx.spawn(&cg, "exec python3 -c 'import time; time.sleep(0.3); x = b\"\\x01\" * (64 * 1024 * 1024); time.sleep(30)'");
    let got = runtime().block_on(async { tokio::time::timeout(Duration::from_secs(10), rx.recv()).await });
    assert_eq!(got.unwrap().unwrap(), ("grower".to_owned(), Notice::MemoryThreshold { bytes: 32 << 20 }));
}

/// Milliseconds since the Unix epoch, as the core's time.
fn now_ms() -> allot_core::Time {
    allot_core::Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}
