//! cgroup v2 controller knobs for real, inside a VM booted with cgroup v2
//! (`tests/vm/run-v2-vm.sh` builds this statically and runs it as the VM's
//! workload): `cpu.max`, `memory.max`, `memory.high`, `pids.max`,
//! `memory.events` notifications and PSI triggers. Only built with the
//! `vm-tests` feature; every test asserts that it really runs on v2.
#![allow(clippy::unwrap_used)]

use allot_sys::Roots;
use allot_sys::actuate::{Actuator, CgroupActuator, SETTLE_TIMEOUT};
use allot_sys::cgroup::tree::{AgentCgroup, CgroupRoot};
use allot_sys::cgroup::{Layout, Mode, v2};
use allot_sys::notify::{Notice, Notifier};
use allot_sys::probe::{CgroupProbe, Probe, TreeProbe};
use allot_sys::spawn::spawn;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Fixture {
    root: CgroupRoot,
    agents: Vec<AgentCgroup>,
    children: Vec<Child>,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        let roots = Roots::host();
        let layout = Layout::discover(&roots).unwrap();
        assert_eq!(layout.mode(), Mode::Unified, "the VM must boot with cgroup v2 only");
        let root = CgroupRoot::create(&layout, &roots, &format!("allot-vm-{test}")).unwrap();
        for c in ["cpu", "memory", "pids"] {
            assert!(root.dirs.v2_has(c), "controller {c} not delegated: {:?}", root.dirs.v2_controllers);
        }
        Fixture { root, agents: Vec::new(), children: Vec::new() }
    }

    fn agent(&mut self, name: &str) -> AgentCgroup {
        let cg = self.root.agent("g", name).unwrap();
        self.agents.push(cg.clone());
        cg
    }

    fn spawn(&mut self, cg: &AgentCgroup, cmd: &mut Command) -> u32 {
        let c = spawn(cmd, Some(cg)).unwrap();
        let pid = c.id();
        self.children.push(c);
        pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for cg in &self.agents {
            let _ = CgroupActuator::new(cg.clone()).kill().and_then(|s| s.wait(SETTLE_TIMEOUT));
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for cg in &self.agents {
            let _ = cg.remove();
        }
        if let Ok(g) = self.root.group("g") {
            let _ = g.remove();
        }
        let _ = self.root.remove();
    }
}

/// This binary re-executed as a workload that allocates and touches `mib` MiB.
fn allocator(mib: usize) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("ALLOT_VM_ALLOC_MIB", mib.to_string());
    c
}

fn allocate(mib: usize) {
    let mut v: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        v.push(vec![1u8; 1 << 20]);
    }
    std::thread::sleep(Duration::from_secs(60));
    drop(v);
}

/// Runs the tests one after another and prints the closing line
/// `N passed, N failed` that the VM script reads.
fn main() {
    if let Ok(mib) = std::env::var("ALLOT_VM_ALLOC_MIB") {
        allocate(mib.parse().unwrap());
        return;
    }
    let tests: [(&str, fn()); 6] = [
        ("v2_cpu_max_holds_a_hog_to_its_quota", v2_cpu_max_holds_a_hog_to_its_quota),
        ("v2_memory_max_kills_an_allocator_and_memory_events_say_so", v2_memory_max_kills_an_allocator_and_memory_events_say_so),
        ("v2_memory_high_throttles_and_is_reported", v2_memory_high_throttles_and_is_reported),
        ("v2_pids_max_stops_a_fork_loop", v2_pids_max_stops_a_fork_loop),
        ("v2_psi_trigger_fires_under_cpu_pressure", v2_psi_trigger_fires_under_cpu_pressure),
        ("v2_freeze_kill_and_events_with_controllers", v2_freeze_kill_and_events_with_controllers),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                passed += 1;
                println!("VM-TEST {name} ... ok");
            }
            Err(_) => {
                failed += 1;
                println!("VM-TEST {name} ... FAILED");
            }
        }
    }
    println!("vm: {passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn v2_cpu_max_holds_a_hog_to_its_quota() {
    let mut fx = Fixture::new("cpu");
    let cg = fx.agent("hog");
    let out = CgroupActuator::new(cg.clone()).set_cpu_limit(Some(200)).unwrap();
    assert_eq!(out.writes[0].path.file_name().unwrap(), "cpu.max");
    assert_eq!(std::fs::read_to_string(cg.v2().unwrap().join("cpu.max")).unwrap().trim(), "20000 100000");
    let pid = fx.spawn(&cg, Command::new("sh").args(["-c", "while :; do :; done"]));
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), pid);
    let mut meter = allot_core::rate::Rate::default();
    std::thread::sleep(Duration::from_millis(500));
    allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(Duration::from_secs(3));
    let m = allot_core::rate::cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms()).unwrap();
    println!("VM: cpu.max 200m hog measured {m}m through /proc");
    assert!((160..=240).contains(&m), "{m}m");
    // The cgroup's own counter agrees.
    let mut cprobe = CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    let mut cm = allot_core::rate::Rate::default();
    allot_core::rate::cpu_millicores(&mut cm, cprobe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(Duration::from_secs(2));
    let c = allot_core::rate::cpu_millicores(&mut cm, cprobe.fast().unwrap().cpu_ns, now_ms()).unwrap();
    assert!((160..=240).contains(&c), "cpu.stat says {c}m");
}

fn v2_memory_max_kills_an_allocator_and_memory_events_say_so() {
    let mut fx = Fixture::new("memmax");
    let cg = fx.agent("alloc");
    let dir = cg.v2().unwrap().to_path_buf();
    CgroupActuator::new(cg.clone()).set_memory_max(Some(32 << 20)).unwrap();
    let (notifier, mut rx) = Notifier::start().unwrap();
    notifier.memory_events("alloc", &dir).unwrap();
    let pid = fx.spawn(&cg, &mut allocator(100));
    let child = fx.children.iter_mut().find(|c| c.id() == pid).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let ev = v2::memory::events(&dir).unwrap();
    assert!(ev.oom_kill >= 1, "{ev:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await }).unwrap().unwrap();
    assert!(matches!(got.1, Notice::MemoryEvents(e) if e.max > 0 || e.oom_kill > 0), "{got:?}");
    println!("VM: memory.max 32Mi killed a 100Mi allocator; memory.events {ev:?}");
}

fn v2_memory_high_throttles_and_is_reported() {
    let mut fx = Fixture::new("memhigh");
    let cg = fx.agent("alloc");
    let dir = cg.v2().unwrap().to_path_buf();
    let out = CgroupActuator::new(cg.clone()).set_memory_high(Some(24 << 20)).unwrap();
    assert_eq!(out.writes[0].path.file_name().unwrap(), "memory.high");
    fx.spawn(&cg, &mut allocator(48));
    assert!(wait_until(Duration::from_secs(20), || v2::memory::events(&dir).unwrap().high > 0), "memory.events high never counted");
    let mut probe = CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    probe.slow().unwrap();
    println!("VM: memory.high 24Mi: high events {}, usage {} bytes", v2::memory::events(&dir).unwrap().high, probe.fast().unwrap().memory);
}

fn v2_pids_max_stops_a_fork_loop() {
    let mut fx = Fixture::new("pids");
    let cg = fx.agent("forker");
    CgroupActuator::new(cg.clone()).set_pids_max(Some(8)).unwrap();
    let pid = fx.spawn(&cg, Command::new("sh").args(["-c", "while :; do sleep 60 & sleep 0.01; done 2>/dev/null"]));
    let dir = cg.v2().unwrap().to_path_buf();
    assert!(wait_until(Duration::from_secs(20), || allot_sys::cgroup::v1::pids::refused(&dir).unwrap_or(0) > 0));
    assert!(allot_sys::cgroup::v1::pids::current(&dir).unwrap() <= 8);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the forking parent lives");
}

fn v2_psi_trigger_fires_under_cpu_pressure() {
    let mut fx = Fixture::new("psi");
    let cg = fx.agent("hog");
    let dir = cg.v2().unwrap().to_path_buf();
    CgroupActuator::new(cg.clone()).set_cpu_limit(Some(100)).unwrap();
    let (notifier, mut rx) = Notifier::start().unwrap();
    // 50 ms of stall within any 500 ms window.
    notifier.pressure("hog", &dir.join("cpu.pressure"), 50_000, 500_000).unwrap();
    for _ in 0..2 {
        fx.spawn(&cg, Command::new("sh").args(["-c", "while :; do :; done"]));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), rx.recv()).await }).unwrap().unwrap();
    assert_eq!(got, ("hog".to_owned(), Notice::Pressure { file: "cpu.pressure".into() }));
    println!("VM: PSI trigger on cpu.pressure fired");
}

fn v2_freeze_kill_and_events_with_controllers() {
    let mut fx = Fixture::new("freeze");
    let cg = fx.agent("tree");
    fx.spawn(&cg, Command::new("sh").args(["-c", "sleep 60 & sleep 60 & wait"]));
    assert!(wait_until(Duration::from_secs(10), || cg.pids().unwrap().len() == 3));
    let mut act = CgroupActuator::new(cg.clone());
    let settle = act.freeze().unwrap();
    assert!(!settle.is_done());
    settle.wait(SETTLE_TIMEOUT).unwrap();
    assert!(v2::core::events(cg.v2().unwrap()).unwrap().frozen);
    act.thaw().unwrap();
    act.kill().unwrap().wait(SETTLE_TIMEOUT).unwrap();
    assert!(!v2::core::events(cg.v2().unwrap()).unwrap().populated);
    cg.kill_and_remove(SETTLE_TIMEOUT).unwrap();
    assert!(!cg.v2().unwrap().exists());
}

/// Milliseconds since the Unix epoch, as the core's time.
fn now_ms() -> allot_core::Time {
    allot_core::Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}
