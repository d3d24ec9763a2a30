//! The kernel boundary against the real kernel: cgroups created beneath our
//! own, real processes, real limits. Skipped with a printed reason where the
//! machine cannot create cgroups, except under `ALLOT_REQUIRE_CGROUPS=1`.
//! Every test removes the cgroups and processes it created, also on failure.
#![allow(clippy::unwrap_used)]

mod common;

use allot_sys::Roots;
use allot_sys::SysError;
use allot_sys::actuate::{Actuator, CgroupActuator, SETTLE_TIMEOUT, TreeActuator};
use allot_sys::cgroup::tree::{AgentCgroup, V1, kill_and_remove_dirs};
use allot_sys::cgroup::{Layout, v1, v2};
use allot_sys::notify::{Notice, Notifier};
use allot_sys::probe::{Probe, TreeProbe};
use common::{Fixture, Loops, millicores, next_notice, proc_state, require_cgroups, runtime, wait_until};
use rustix::process::{Pid, test_kill_process};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fixture for one test; None, the test skipped, where this machine cannot create cgroups.
fn fixture(test: &str) -> Option<Fixture> {
    let layout = match Layout::discover(&Roots::host()) {
        Ok(l) => l,
        Err(e) => return skip(&format!("cannot read the cgroup layout: {e}")),
    };
    match Fixture::create(&layout, test) {
        Ok(fx) => Some(fx),
        Err(e) => skip(&format!("cannot create cgroups here: {e}")),
    }
}

/// A fixture with one agent in it.
fn with_agent(test: &str, agent: &str) -> Option<(Fixture, AgentCgroup)> {
    let mut fx = fixture(test)?;
    let cg = fx.agent(agent);
    Some((fx, cg))
}

fn skip(why: &str) -> Option<Fixture> {
    assert!(!require_cgroups(), "ALLOT_REQUIRE_CGROUPS=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// The agent's v1 freezer directory; None, the test skipped, where this host has none.
fn v1_freezer(cg: &AgentCgroup) -> Option<&Path> {
    let freezer = cg.v1(V1::Freezer);
    if freezer.is_none() {
        eprintln!("skipped: no v1 freezer on this host");
    }
    freezer
}

/// The agent's cgroup without its v2 directory, so that it is frozen and killed
/// through the v1 freezer (also on drop); None where this host has no v1 freezer.
fn v1_only(fx: &mut Fixture, mut cg: AgentCgroup) -> Option<AgentCgroup> {
    v1_freezer(&cg)?;
    cg.dirs.v2 = None;
    fx.agents.push(cg.clone());
    Some(cg)
}

fn alive(pid: u32) -> bool {
    let Some(p) = Pid::from_raw(pid as i32) else {
        return false;
    };
    // A zombie still answers kill(0): look at its state.
    test_kill_process(p).is_ok() && proc_state(pid).is_some_and(|s| s != b'Z')
}

#[test]
fn spawned_commands_start_inside_the_agent_cgroup() {
    let Some((mut fx, cg)) = with_agent("spawn", "a") else {
        return;
    };
    let pid = fx.spawn(&cg, "sleep 30");
    for d in cg.dirs.all() {
        let procs = allot_sys::cgroup::fs::procs(d).unwrap();
        assert!(procs.contains(&pid), "{pid} not in {}", d.display());
    }
}

/// A process's cgroup directories, read from its `/proc/<pid>/cgroup`
/// against our mounts, are its agent's (that is how the API tells which
/// agent a caller belongs to without reading every agent's `cgroup.procs`);
/// our own are where `Layout::discover` puts us.
#[test]
fn a_process_s_cgroup_directories_are_its_agent_s() {
    let Some((mut fx, cg)) = with_agent("dirs-of", "a") else {
        return;
    };
    let layout = Layout::discover(&Roots::host()).unwrap();
    let own = layout.of_pid(Path::new("/proc"), std::process::id()).unwrap();
    assert_eq!(own.dirs(), layout.dirs());
    let pid = fx.spawn(&cg, "sleep 30");
    let theirs = layout.of_pid(Path::new("/proc"), pid).unwrap().dirs();
    for d in cg.dirs.all() {
        assert!(theirs.iter().any(|t| t == d), "{} not among {theirs:?}", d.display());
    }
    assert!(!theirs.iter().any(|t| layout.dirs().contains(t)), "{theirs:?} are ours");
    assert!(matches!(layout.of_pid(Path::new("/proc"), u32::MAX), Err(SysError::Read { .. })));
}

/// One process with three extra threads and one child: 2 processes, 5
/// threads, through the cgroup probe (cgroup.procs and pids.current) and the
/// tree probe (/proc) alike. The cgroup probe read 5 processes from
/// pids.current before processes and threads were told apart.
#[test]
fn processes_count_processes_and_threads_count_tasks() {
    let Some((mut fx, cg)) = with_agent("threads", "a") else {
        return;
    };
    let script = "import subprocess, threading, time\n\
                  child = subprocess.Popen(['sleep', '30'])\n\
                  for _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n\
                  print('ready', flush=True)\n\
                  time.sleep(30)\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script]).stdout(std::process::Stdio::piped());
    let pid = match allot_sys::spawn::spawn(&mut cmd, Some(&cg)) {
        Ok(child) => {
            let pid = child.id();
            fx.children.push(child);
            pid
        }
        Err(e) => {
            assert!(!require_cgroups(), "python3 is needed (ALLOT_REQUIRE_CGROUPS=1): {e}");
            eprintln!("skipped: no python3 to start threads: {e}");
            return;
        }
    };
    let mut line = String::new();
    let stdout = fx.child(pid).stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let mut probe = allot_sys::probe::CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    let mut tree = TreeProbe::new(PathBuf::from("/proc"), pid);
    let f = probe.fast().unwrap();
    let t = tree.fast().unwrap();
    assert_eq!((f.processes, f.threads), (2, 5), "cgroup probe");
    assert_eq!((t.processes, t.threads), (2, 5), "tree probe");
    let mut unkept = allot_sys::probe::CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), false).unwrap();
    let u = unkept.fast().unwrap();
    assert_eq!((u.processes, u.threads), (2, 5), "cgroup probe without kept files");
}

#[test]
fn a_cpu_hog_is_held_to_its_quota() {
    let Some((mut fx, cg)) = with_agent("cpu", "hog") else {
        return;
    };
    let mut act = CgroupActuator::new(cg.clone());
    let out = act.set_cpu_limit(Some(200)).unwrap();
    assert!(!out.writes.is_empty());
    let pid = fx.spawn(&cg, "while :; do :; done");
    // Measured independently of the cgroup: utime+stime through /proc.
    let mut probe = TreeProbe::new(PathBuf::from("/proc"), pid);
    let m = millicores(&mut probe, Duration::from_millis(300), Duration::from_secs(3));
    eprintln!("cpu hog limited to 200m measured {m}m through /proc");
    assert!((160..=240).contains(&m), "measured {m}m, wanted 200m within 20 %");
    // Cleared, it runs free.
    act.set_cpu_limit(None).unwrap();
    let free = millicores(&mut probe, Duration::from_millis(300), Duration::from_secs(1));
    assert!(free > 400, "unlimited hog at {free}m");
}

#[test]
fn an_allocator_is_killed_at_its_memory_ceiling_in_its_own_group_only() {
    let Some((mut fx, victim)) = with_agent("mem", "alloc") else {
        return;
    };
    let bystander = fx.agent("bystander");
    let mut act = CgroupActuator::new(victim.clone());
    act.set_memory_max(Some(64 << 20)).unwrap();
    let calm = fx.spawn(&bystander, "sleep 30");
    let pid = fx.spawn(&victim, "exec python3 -c 'import time; x = b\"\\x01\" * (200 * 1024 * 1024); time.sleep(30)'");
    let status = fx.child(pid).wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    if let Some(d) = victim.v1(V1::Memory) {
        assert_eq!(v1::memory::oom_kills(d).unwrap(), 1);
        assert_eq!(v1::memory::oom_kills(bystander.v1(V1::Memory).unwrap()).unwrap(), 0);
    }
    // The counters an exit is labelled from: one OOM kill, at this cgroup's own limit.
    let c = victim.dirs.oom_counters().unwrap().unwrap();
    assert_eq!((c.oom_kills, c.limit), (1, Some(64 << 20)), "{c:?}");
    assert!(c.limit_reached_since(None), "{c:?}");
    let b = bystander.dirs.oom_counters().unwrap().unwrap();
    assert!(b.oom_kills == 0 && !b.limit_reached_since(None), "{b:?}");
    assert!(alive(calm), "the bystander survived");
}

#[test]
fn a_fork_loop_stops_at_pids_max_and_the_parent_lives() {
    let Some((mut fx, cg)) = with_agent("pids", "forker") else {
        return;
    };
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

/// A shell with two sleeping children in the agent's cgroup; its pid once all three are there.
fn sleeping_tree(fx: &mut Fixture, cg: &AgentCgroup) -> u32 {
    let pid = fx.spawn(cg, "sleep 100 & sleep 100 & wait");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() == 3));
    pid
}

/// Asserts that every directory was removed and, once reaped, the process is gone.
fn assert_all_gone(fx: &mut Fixture, dirs: impl IntoIterator<Item = impl AsRef<Path>>, pid: u32) {
    for d in dirs {
        let d = d.as_ref();
        assert!(!d.exists(), "{} still there", d.display());
    }
    fx.reap();
    assert!(!alive(pid));
}

fn freeze_thaw(fx: &mut Fixture, cg: AgentCgroup) {
    let loops = Loops::new();
    fx.spawn(&cg, &loops.script());
    assert!(loops.running());
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
    let stopped = loops.assert_stopped();
    act.thaw().unwrap();
    assert!(loops.resumed_after(&stopped), "every process resumed");
    // Stopped before the loops' directory goes away.
    act.kill().unwrap().wait(SETTLE_TIMEOUT).unwrap();
}

#[test]
fn freeze_stops_every_process_and_thaw_resumes_them() {
    if let Some((mut fx, cg)) = with_agent("freeze", "busy") {
        freeze_thaw(&mut fx, cg);
    }
}

#[test]
fn the_v1_freezer_alone_also_freezes_and_thaws() {
    let Some((mut fx, cg)) = with_agent("freeze1", "busy") else {
        return;
    };
    assert!(!require_cgroups() || cg.v1(V1::Freezer).is_some() || cg.v2().is_some(), "no freezer at all");
    if let Some(cg) = v1_only(&mut fx, cg) {
        freeze_thaw(&mut fx, cg);
    }
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
    fx.reap();
    let survivors: Vec<_> = seen.into_iter().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "{survivors:?}");
}

#[test]
fn kill_leaves_no_process_even_while_the_tree_forks() {
    if let Some((mut fx, cg)) = with_agent("kill", "forker") {
        kill_everything(&mut fx, cg);
    }
}

#[test]
fn kill_through_the_v1_freezer() {
    let Some((mut fx, cg)) = with_agent("kill1", "forker") else {
        return;
    };
    if let Some(cg) = v1_only(&mut fx, cg) {
        kill_everything(&mut fx, cg);
    }
}

#[test]
fn a_frozen_agent_can_be_killed_through_v2_and_through_the_v1_freezer() {
    let Some(mut fx) = fixture("killfrozen") else {
        return;
    };
    for (name, v1_only_dirs) in [("both", false), ("v1", true)] {
        let cg = fx.agent(name);
        let Some(cg) = (if v1_only_dirs { v1_only(&mut fx, cg) } else { Some(cg) }) else {
            continue;
        };
        let pid = sleeping_tree(&mut fx, &cg);
        let mut act = CgroupActuator::new(cg.clone());
        act.freeze().unwrap().wait(SETTLE_TIMEOUT).unwrap();
        let out = act.kill().unwrap().wait(SETTLE_TIMEOUT).unwrap();
        eprintln!("kill of a frozen agent ({name}): {}", out.detail);
        assert!(cg.pids().unwrap().is_empty(), "{name}");
        assert_eq!(fx.child(pid).wait().unwrap().signal(), Some(9), "{name}");
    }
}

#[test]
fn kill_and_remove_empties_and_removes_every_directory() {
    let Some((mut fx, cg)) = with_agent("killrm", "forker") else {
        return;
    };
    CgroupActuator::new(cg.clone()).set_pids_max(Some(40)).unwrap();
    let pid = fx.spawn(&cg, "while :; do sleep 100 & done 2>/dev/null");
    assert!(wait_until(Duration::from_secs(5), || cg.pids().unwrap().len() > 10));
    let out = cg.kill_and_remove(SETTLE_TIMEOUT).unwrap();
    eprintln!("kill_and_remove: {}", out.detail);
    assert_all_gone(&mut fx, cg.dirs.all(), pid);
}

#[test]
fn kill_and_remove_on_stored_v1_paths_goes_through_the_freezer() {
    let Some((mut fx, cg)) = with_agent("killrm1", "leftover") else {
        return;
    };
    let Some(freezer) = v1_freezer(&cg).map(PathBuf::from) else {
        return;
    };
    let pid = sleeping_tree(&mut fx, &cg);
    // Only the v1 paths, as a store of an earlier run would hold them (plus one already gone).
    let mut dirs: Vec<PathBuf> = cg.dirs.v1.values().cloned().collect();
    dirs.push(freezer.join("already-gone"));
    let (out, pids) = kill_and_remove_dirs(&dirs, SETTLE_TIMEOUT).unwrap();
    eprintln!("kill_and_remove_dirs: {} {:?}", out.detail, out.writes);
    assert!(out.writes.iter().any(|w| w.value == "FROZEN") && out.writes.iter().any(|w| w.value == "THAWED"), "{out:?}");
    assert!(pids.contains(&pid) && pids.len() >= 3, "{pids:?}");
    assert_all_gone(&mut fx, &dirs, pid);
}

#[test]
fn a_kill_that_cannot_finish_times_out_naming_the_processes_left() {
    let Some((mut fx, cg)) = with_agent("killtimeout", "frozen") else {
        return;
    };
    let Some(freezer) = v1_freezer(&cg).map(PathBuf::from) else {
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
    assert_eq!(fx.child(pid).wait().unwrap().signal(), Some(9));
}

#[test]
fn v2_events_report_frozen_and_empty() {
    let Some((mut fx, cg)) = with_agent("events", "short") else {
        return;
    };
    let Some(v2dir) = cg.v2().map(PathBuf::from) else {
        assert!(!require_cgroups() || Layout::discover(&Roots::host()).unwrap().v2_dir().is_none(), "v2 mounted but unused");
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
    let Some((mut fx, cg)) = with_agent("threshold", "grower") else {
        return;
    };
    let Some(dir) = cg.v1(V1::Memory).map(PathBuf::from) else {
        eprintln!("skipped: no v1 memory controller");
        return;
    };
    let (notifier, mut rx) = Notifier::start().unwrap();
    notifier.memory_threshold("grower", &dir, 32 << 20).unwrap();
    fx.spawn(&cg, "exec python3 -c 'import time; time.sleep(0.3); x = b\"\\x01\" * (64 * 1024 * 1024); time.sleep(30)'");
    assert_eq!(next_notice(&mut rx, Duration::from_secs(10)), ("grower".to_owned(), Notice::MemoryThreshold { bytes: 32 << 20 }));
}

/// Exits are told through pidfds on one epoll set: the one that ends is
/// named among many watched, its watch is dropped, and a forgotten agent's
/// watches leave the set (nothing more is said about it).
#[test]
fn exits_are_told_among_many_watches_and_forgotten_agents_leave_the_set() {
    let (notifier, mut rx) = Notifier::start().unwrap();
    let mut children: Vec<std::process::Child> = (0..50).map(|_| std::process::Command::new("sleep").arg("30").spawn().unwrap()).collect();
    for (i, c) in children.iter().enumerate() {
        notifier.process_exit(&format!("a{i}"), c.id(), None).unwrap();
    }
    assert_eq!(notifier.watched(), 50);
    children[17].kill().unwrap();
    children[17].wait().unwrap();
    assert_eq!(next_notice(&mut rx, Duration::from_secs(5)), ("a17".to_owned(), Notice::Exited { pid: children[17].id() }));
    assert!(wait_until(Duration::from_secs(5), || notifier.watched() == 49), "the ended watch is dropped");
    notifier.forget("a3");
    assert_eq!(notifier.watched(), 48);
    children[3].kill().unwrap();
    children[3].wait().unwrap();
    children[4].kill().unwrap();
    children[4].wait().unwrap();
    assert_eq!(
        next_notice(&mut rx, Duration::from_secs(5)),
        ("a4".to_owned(), Notice::Exited { pid: children[4].id() }),
        "a3 was forgotten"
    );
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn no_file_the_kernel_puts_in_a_cgroup_is_a_valid_agent_or_group_name() {
    // Agents and groups are directories beside these files; a name that is one cannot be made.
    let Some(fx) = fixture("names") else { return };
    let layout = Layout::discover(&Roots::host()).unwrap();
    let roots = Roots::host();
    let dirs: Vec<PathBuf> = ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"]
        .iter()
        .filter_map(|c| layout.v1_dir(c))
        .chain(layout.v2_dir())
        .map(|d| roots.path(&d))
        .collect();
    let mut files = 0;
    for dir in &dirs {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let name = e.file_name().into_string().unwrap();
                files += 1;
                assert!(allot_core::AgentId::new(name.as_str()).is_err(), "{} is accepted as an agent id", dir.join(&name).display());
                assert!(!allot_core::group::valid_group_name(&name) || name.contains('.'), "{name} is accepted as a group name");
            }
        }
    }
    assert!(files > 10, "read the files of {dirs:?}");
    drop(fx);
}

/// The working set is the raw usage less the inactive file cache, read only
/// when asked (`refresh_working_set`): a fresh probe counts the page cache
/// an agent made, a refreshed one subtracts its inactive part, as
/// `memory.stat` says it.
#[test]
fn the_working_set_subtracts_the_inactive_cache_only_once_refreshed() {
    let Some((mut fx, cg)) = with_agent("wset", "cache") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.bin");
    // 48 MiB written through the page cache (charged to the agent's cgroup), then the writer waits.
    let pid = fx.spawn(&cg, &format!("dd if=/dev/zero of={} bs=1M count=48 2>/dev/null && echo done && exec sleep 60", file.display()));
    let _ = pid;
    let mut probe = allot_sys::probe::CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || probe.fast().unwrap().memory_raw >= 40 << 20),
        "the page cache was not charged: {:?}",
        probe.fast().unwrap()
    );
    let before = probe.fast().unwrap();
    assert_eq!(before.memory, before.memory_raw, "nothing subtracted before a refresh");
    let inactive = probe.refresh_working_set().unwrap().expect("a memory controller");
    let after = probe.fast().unwrap();
    assert_eq!(after.memory, after.memory_raw.saturating_sub(inactive), "{after:?} less {inactive}");
    assert!(inactive > 0 && after.memory < after.memory_raw, "written pages start on the inactive list: {inactive} {after:?}");
    let dirs = [cg.v2(), cg.v1(V1::Memory)];
    let stat_dir = dirs.iter().flatten().find(|d| d.join("memory.stat").exists()).unwrap();
    let stat = std::fs::read_to_string(stat_dir.join("memory.stat")).unwrap();
    let field = |k: &str| stat.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()));
    let now = field("total_inactive_file ").or_else(|| field("inactive_file ")).unwrap();
    assert!(now.abs_diff(inactive) <= 4 << 20, "as memory.stat says: {now} vs {inactive}");
}

/// Open files are counted through descriptors of `/proc/<pid>/fd` kept
/// open between slow samples; a process that exits (its descriptors then
/// fail) is replaced by the one that follows it, counted right.
#[test]
fn open_files_follow_processes_through_kept_descriptors() {
    let Some((mut fx, cg)) = with_agent("kept", "fds") else {
        return;
    };
    let count = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let first = fx.spawn(&cg, "exec 3</dev/null 4</dev/null 5</dev/null; exec sleep 60");
    let mut probe = allot_sys::probe::CgroupProbe::new(cg.clone(), PathBuf::from("/proc"), true).unwrap();
    assert!(wait_until(Duration::from_secs(5), || proc_state(first).is_some() && count(first) >= 6), "the first process opened its files");
    assert_eq!(probe.slow().unwrap().files, count(first));
    let kept = probe.open_files();
    rustix::process::kill_process(Pid::from_raw(first as i32).unwrap(), rustix::process::Signal::KILL).unwrap();
    fx.reap();
    let second = fx.spawn(&cg, "exec 3</dev/null; exec sleep 60");
    assert!(wait_until(Duration::from_secs(5), || count(second) >= 4), "the second process opened its file");
    assert!(wait_until(Duration::from_secs(5), || probe.pids().unwrap() == vec![second]), "only the second is left");
    assert_eq!(probe.slow().unwrap().files, count(second), "counted for the process that is there now");
    assert_eq!(probe.open_files(), kept, "the gone process's descriptors were let go, the new one's kept");
}
