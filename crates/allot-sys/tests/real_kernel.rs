//! Discovery and host reading against the real kernel of this machine.
//!
//! Where the machine has no cgroups these tests print why and pass, except
//! under `ALLOT_REQUIRE_CGROUPS=1` (set by `.ci/run`), where missing support
//! fails.
#![allow(clippy::unwrap_used)]

mod common;

use allot_sys::Roots;
use allot_sys::cgroup::{Layout, Mode};
use allot_sys::host::read_host;
use common::require_cgroups;

#[test]
fn our_own_cgroup_is_found_and_holds_this_process() {
    let layout = Layout::discover(&Roots::host()).unwrap();
    if layout.mode() == Mode::None {
        assert!(!require_cgroups(), "ALLOT_REQUIRE_CGROUPS=1 but no cgroup filesystem is mounted");
        eprintln!("skipped: no cgroup filesystem is mounted on this machine");
        return;
    }
    let me = std::process::id().to_string();
    let mut checked = Vec::new();
    let dirs = ["memory", "cpu", "pids", "freezer"].iter().filter_map(|c| layout.v1_dir(c)).chain(layout.v2_dir());
    for dir in dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == me), "pid {me} not in {}", dir.display());
        checked.push(dir);
    }
    assert!(!checked.is_empty(), "mode {:?} but no own cgroup found", layout.mode());
    eprintln!("{} own cgroups verified: {checked:?}", layout.mode().name());
}

#[test]
fn the_host_reading_matches_proc() {
    let h = read_host(&Roots::host(), None, None).unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total = allot_sys::host::parse_meminfo_total(&meminfo).unwrap();
    assert!(h.totals.memory <= total && h.totals.memory > 0);
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    assert!(h.totals.processes <= pid_max && h.totals.processes > 0);
    assert!(h.totals.cpu >= 1 && h.totals.cpu <= std::thread::available_parallelism().unwrap().get() as u64 * 1000);
}

#[test]
fn host_memory_now_matches_proc_meminfo() {
    let m = allot_sys::host::meminfo(&Roots::host()).unwrap();
    let total = allot_sys::host::parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
    assert_eq!(m.total, total);
    assert!(m.available > 0 && m.available <= m.total, "{m:?}");
}
