//! cgroup v2 controller knobs for real, inside a VM booted with cgroup v2
//! (`tests/vm/run-v2-vm.sh` builds this statically and runs it as the VM's
//! workload): `cpu.max`, `memory.max`, `memory.high`, `pids.max`,
//! `memory.events` notifications and PSI triggers. Only built with the
//! `vm-tests` feature; every test asserts that it really runs on v2.
#![allow(clippy::unwrap_used)]

mod common;

use allot_sys::Roots;
use allot_sys::actuate::{Actuator, CgroupActuator, SETTLE_TIMEOUT};
use allot_sys::cgroup::{Layout, Mode, v2};
use allot_sys::notify::{Notice, Notifier};
use allot_sys::probe::{CgroupProbe, Probe, TreeProbe};
use common::{Fixture, millicores, next_notice, wait_until};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A fixture on the VM's cgroup v2 hierarchy, with the controllers the tests need delegated.
fn fixture(test: &str) -> Fixture {
    let layout = Layout::discover(&Roots::host()).unwrap();
    assert_eq!(layout.mode(), Mode::Unified, "the VM must boot with cgroup v2 only");
    let fx = Fixture::create(&layout, test).unwrap();
    for c in ["cpu", "memory", "pids"] {
        assert!(fx.root.dirs.v2_has(c), "controller {c} not delegated: {:?}", fx.root.dirs.v2_controllers);
    }
    fx
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

fn v2_cpu_max_holds_a_hog_to_its_quota() {
    let mut fx = fixture("cpu");
    let cg = fx.agent("hog");
    let out = CgroupActuator::new(cg.clone()).set_cpu_limit(Some(200)).unwrap();
    assert_eq!(out.writes[0].path.file_name().unwrap(), "cpu.max");
    assert_eq!(std::fs::read_to_string(cg.v2().unwrap().join("cpu.max")).unwrap().trim(), "20000 100000");
    let pid = fx.spawn(&cg, "while :; do :; done");
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), pid);
    let m = millicores(&mut probe, Duration::from_millis(500), Duration::from_secs(3));
    println!("VM: cpu.max 200m hog measured {m}m through /proc");
    assert!((160..=240).contains(&m), "{m}m");
    // The cgroup's own counter agrees.
    let mut cprobe = CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    let c = millicores(&mut cprobe, Duration::ZERO, Duration::from_secs(2));
    assert!((160..=240).contains(&c), "cpu.stat says {c}m");
}

fn v2_memory_max_kills_an_allocator_and_memory_events_say_so() {
    let mut fx = fixture("memmax");
    let cg = fx.agent("alloc");
    let dir = cg.v2().unwrap().to_path_buf();
    CgroupActuator::new(cg.clone()).set_memory_max(Some(32 << 20)).unwrap();
    let (notifier, mut rx) = Notifier::start().unwrap();
    notifier.memory_events("alloc", &dir).unwrap();
    let pid = fx.spawn_command(&cg, &mut allocator(100));
    let status = fx.child(pid).wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let ev = v2::memory::events(&dir).unwrap();
    assert!(ev.oom_kill >= 1, "{ev:?}");
    let got = next_notice(&mut rx, Duration::from_secs(5));
    assert!(matches!(got.1, Notice::MemoryEvents(e) if e.max > 0 || e.oom_kill > 0), "{got:?}");
    println!("VM: memory.max 32Mi killed a 100Mi allocator; memory.events {ev:?}");
}

fn v2_memory_high_throttles_and_is_reported() {
    let mut fx = fixture("memhigh");
    let cg = fx.agent("alloc");
    let dir = cg.v2().unwrap().to_path_buf();
    let out = CgroupActuator::new(cg.clone()).set_memory_high(Some(24 << 20)).unwrap();
    assert_eq!(out.writes[0].path.file_name().unwrap(), "memory.high");
    fx.spawn_command(&cg, &mut allocator(48));
    assert!(wait_until(Duration::from_secs(20), || v2::memory::events(&dir).unwrap().high > 0), "memory.events high never counted");
    let mut probe = CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    probe.refresh_working_set().unwrap();
    println!("VM: memory.high 24Mi: high events {}, usage {} bytes", v2::memory::events(&dir).unwrap().high, probe.fast().unwrap().memory);
}

fn v2_pids_max_stops_a_fork_loop() {
    let mut fx = fixture("pids");
    let cg = fx.agent("forker");
    CgroupActuator::new(cg.clone()).set_pids_max(Some(8)).unwrap();
    let pid = fx.spawn(&cg, "while :; do sleep 60 & sleep 0.01; done 2>/dev/null");
    let dir = cg.v2().unwrap().to_path_buf();
    assert!(wait_until(Duration::from_secs(20), || allot_sys::cgroup::v1::pids::refused(&dir).unwrap_or(0) > 0));
    assert!(allot_sys::cgroup::v1::pids::current(&dir).unwrap() <= 8);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the forking parent lives");
}

fn v2_psi_trigger_fires_under_cpu_pressure() {
    let mut fx = fixture("psi");
    let cg = fx.agent("hog");
    let dir = cg.v2().unwrap().to_path_buf();
    CgroupActuator::new(cg.clone()).set_cpu_limit(Some(100)).unwrap();
    let (notifier, mut rx) = Notifier::start().unwrap();
    // 50 ms of stall within any 500 ms window.
    notifier.pressure("hog", &dir.join("cpu.pressure"), 50_000, 500_000).unwrap();
    for _ in 0..2 {
        fx.spawn(&cg, "while :; do :; done");
    }
    let got = next_notice(&mut rx, Duration::from_secs(20));
    assert_eq!(got, ("hog".to_owned(), Notice::Pressure { file: "cpu.pressure".into() }));
    println!("VM: PSI trigger on cpu.pressure fired");
}

fn v2_freeze_kill_and_events_with_controllers() {
    let mut fx = fixture("freeze");
    let cg = fx.agent("tree");
    fx.spawn(&cg, "sleep 60 & sleep 60 & wait");
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
