//! Start/stop cycles against one real daemon: an agent started through
//! `POST /v1/agents` and awaited until it exited, 2,000 times (half under
//! unique names, forgotten again by the daemon's `forget_exited_beyond`, half
//! under one name reused back to back). The daemon's open descriptors and
//! RSS after a warm-up and at the end must agree within 10 % (plus a small
//! absolute slack: 8 descriptors, 2 MiB), and no agent cgroup may be left
//! in any hierarchy. Prints the figures and the cost of a cycle.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{agent_dirs, cgroups_here, http, launch};
use std::time::{Duration, Instant};

const CYCLES: usize = 2_000;
const WARMUP: usize = 100;
const FD_SLACK: usize = 8;
const RSS_SLACK_KIB: u64 = 2 * 1024;

/// Remember few exited agents and forget them every second, so the end state is comparable with the warm-up's.
const FLEET: &str = "[retention]\ninterval = \"1s\"\nforget_exited_beyond = 20\n";
/// `forget_exited_beyond` above.
const FORGET_BEYOND: usize = 20;

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted.get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn two_thousand_start_stop_cycles_leak_no_descriptors_memory_or_cgroups() {
    if !cgroups_here() {
        return;
    }
    let d = launch(FLEET, "cycles");
    let pid = d.pid();
    // Settled: every agent cgroup removed, and a retention pass has forgotten
    // what it may. The pass runs at the first tick on or after its 1 s
    // interval, so up to about 2 s after the last exit: waited for, not slept.
    let listed = || -> usize {
        let v: serde_json::Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents", "").1).unwrap();
        v.as_array().unwrap().len()
    };
    let settle = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent_dirs(&d.roots).is_empty() {
            assert!(Instant::now() < deadline, "{what}: agent cgroups left: {:?}", agent_dirs(&d.roots));
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while listed() > FORGET_BEYOND {
            assert!(Instant::now() < deadline, "{what}: exited agents are not forgotten: {} remembered", listed());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        (fds(pid), rss_kib(pid))
    };
    let (mut start_lat, mut exit_lat) = (Vec::with_capacity(CYCLES), Vec::with_capacity(CYCLES));
    let mut warm = None;
    let mut polls = 0usize;
    let began = Instant::now();
    let mut busy = Duration::ZERO;
    for i in 0..CYCLES {
        if i == WARMUP {
            warm = Some(settle("warm-up"));
        }
        let t0 = Instant::now();
        // Pairs of cycles reuse one name back to back; the others are unique.
        let name = if i % 4 == 1 || i % 4 == 2 { "again".to_owned() } else { format!("c{i}") };
        let body = serde_json::json!({"name": name, "group": "lightweight_agent", "command": ["true"]}).to_string();
        let (st, resp) = http(&d.sock, "POST", "/v1/agents", &body);
        assert_eq!(st, 201, "cycle {i}: {resp}");
        let t1 = Instant::now();
        let deadline = t1 + Duration::from_secs(10);
        loop {
            polls += 1;
            let a = d.agent(&name);
            if a["state"] == "exited" {
                let exit = a["exit"].as_str().unwrap_or_default();
                assert!(exit.contains("its own exit") && !exit.contains("signal"), "cycle {i}: {name} ended by {exit:?}");
                break;
            }
            assert!(Instant::now() < deadline, "cycle {i}: {name} did not exit: {a}");
            std::thread::sleep(Duration::from_millis(1));
        }
        start_lat.push(t1 - t0);
        exit_lat.push(t1.elapsed());
        busy += t0.elapsed();
    }
    let wall = began.elapsed();
    let (wf, wr) = warm.unwrap();
    let (ef, er) = settle("end");
    let per_cycle = busy / CYCLES as u32;
    start_lat.sort();
    exit_lat.sort();
    println!(
        "{CYCLES} cycles: {:.1} s of cycles ({:.1} s wall, with the warm-up's settling), {:.2} ms a cycle ({polls} status polls)",
        busy.as_secs_f64(),
        wall.as_secs_f64(),
        ms(per_cycle)
    );
    println!(
        "  POST /v1/agents (cgroup, spawn, store): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&start_lat, 50)),
        ms(percentile(&start_lat, 99)),
        ms(start_lat.last().copied().unwrap_or_default())
    );
    println!(
        "  until reported exited (exit notice, reap, store): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&exit_lat, 50)),
        ms(percentile(&exit_lat, 99)),
        ms(exit_lat.last().copied().unwrap_or_default())
    );
    println!("  daemon fds: {wf} after {WARMUP} cycles, {ef} at the end (allowed {:.0})", wf as f64 * 1.1 + FD_SLACK as f64);
    println!(
        "  daemon VmRSS: {:.1} MiB after {WARMUP} cycles, {:.1} MiB at the end (allowed {:.1})",
        wr as f64 / 1024.0,
        er as f64 / 1024.0,
        (wr as f64 * 1.1 + RSS_SLACK_KIB as f64) / 1024.0
    );
    assert!(ef as f64 <= wf as f64 * 1.1 + FD_SLACK as f64, "descriptors leak: {wf} -> {ef}");
    assert!(er as f64 <= wr as f64 * 1.1 + RSS_SLACK_KIB as f64, "memory leaks: {wr} KiB -> {er} KiB");
    assert!(listed() <= FORGET_BEYOND, "exited agents are forgotten: {} remembered", listed());
    assert!(agent_dirs(&d.roots).is_empty());
    let mut d = d;
    d.stop();
    let left: Vec<_> = d.roots.iter().filter(|r| r.exists()).collect();
    println!("  after SIGTERM: cgroup root left in {} of {} hierarchies", left.len(), d.roots.len());
    assert!(left.is_empty(), "the daemon left its cgroup root: {left:?}");
}
