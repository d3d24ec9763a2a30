//! `allot bench sample`: the sampling cost per agent, for allot against
//! psutil and the sysinfo crate, measured in one run on the same agents.

use super::{Error, print};
use crate::cli::BenchSampleArgs;
use allot_sys::Roots;
use allot_sys::actuate::{Actuator, CgroupActuator};
use allot_sys::cgroup::Layout;
use allot_sys::cgroup::tree::{AgentCgroup, CgroupRoot};
use allot_sys::probe::{CgroupProbe, Probe};
use serde_json::json;
use std::io::Write;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const PSUTIL_SCRIPT: &str = include_str!("../../../../bench/psutil_sample.py");

struct Agent {
    cg: AgentCgroup,
    child: Child,
    pids: Vec<u32>,
}

/// Everything the benchmark started, stopped and removed on drop.
struct Fleet {
    root: CgroupRoot,
    agents: Vec<Agent>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        eprintln!("stopping {} agents", self.agents.len());
        for a in &mut self.agents {
            if let Err(e) = CgroupActuator::new(a.cg.clone()).kill() {
                eprintln!("warning: {e}");
            }
            let _ = a.child.wait();
            let _ = a.cg.remove();
        }
        if let Ok(g) = self.root.group("bench") {
            let _ = g.remove();
        }
        if let Err(e) = self.root.remove() {
            eprintln!("warning: could not remove the benchmark cgroup: {e}");
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn grow(fleet: &mut Fleet, n: usize) -> Result<(), Error> {
    let start = fleet.agents.len();
    for i in start..n {
        let cg = fleet.root.agent("bench", &format!("a{i}"))?;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 1000000 & exec sleep 1000000"]).stdin(Stdio::null());
        let child = allot_sys::spawn::spawn(&mut cmd, Some(&cg))?;
        fleet.agents.push(Agent { cg, child, pids: Vec::new() });
        if (i + 1) % 250 == 0 || i + 1 == n {
            eprint!("\rstarting agents: {}/{n}", i + 1);
        }
    }
    eprintln!();
    let deadline = Instant::now() + Duration::from_secs(60);
    for a in &mut fleet.agents[start..] {
        loop {
            a.pids = a.cg.pids()?;
            if a.pids.len() >= 2 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("agent {} did not start its two processes", a.cg.dirs.all()[0].display()).into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

fn measure_allot(agents: &[Agent], rounds: usize) -> Result<(f64, f64), Error> {
    // Five kept-open files per agent while the open-files limit allows (with room to spare).
    let limit = usize::try_from(allot_sys::spawn::nofile_limit()).unwrap_or(usize::MAX);
    let keep_open = agents.len() * 5 + 1024 < limit;
    let mut probes: Vec<CgroupProbe> =
        agents.iter().map(|a| CgroupProbe::new(a.cg.clone(), allot_sys::Roots::host().proc, keep_open)).collect::<Result<_, _>>()?;
    let n = probes.len() as f64;
    let (mut fast, mut full) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for p in &mut probes {
            std::hint::black_box(p.fast()?);
        }
        fast.push(t.elapsed().as_secs_f64() * 1e6 / n);
        let t = Instant::now();
        for p in &mut probes {
            std::hint::black_box(p.fast()?);
            std::hint::black_box(p.slow()?);
        }
        full.push(t.elapsed().as_secs_f64() * 1e6 / n);
    }
    Ok((median(fast), median(full)))
}

fn measure_sysinfo(agents: &[Agent], rounds: usize) -> f64 {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pids: Vec<Pid> = agents.iter().flat_map(|a| a.pids.iter().map(|p| Pid::from_u32(*p))).collect();
    let mut sys = System::new();
    let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        times.push(t.elapsed().as_secs_f64() * 1e6 / agents.len() as f64);
    }
    median(times)
}

fn measure_psutil(agents: &[Agent], rounds: usize) -> Result<f64, Error> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("psutil_sample.py");
    std::fs::write(&script, PSUTIL_SCRIPT)?;
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3 for the psutil baseline: {e}"))?;
    let pids: Vec<&Vec<u32>> = agents.iter().map(|a| &a.pids).collect();
    child.stdin.take().ok_or("no stdin")?.write_all(serde_json::to_string(&pids)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("psutil baseline failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["psutil_us"].as_f64().ok_or_else(|| "psutil baseline printed no psutil_us".into())
}

pub(crate) fn sample(args: &BenchSampleArgs) -> Result<ExitCode, Error> {
    if args.agents.is_empty() || args.agents.contains(&0) || args.rounds == 0 {
        return Err("--agents needs counts above 0 and --rounds at least 1".into());
    }
    let (old, new) = allot_sys::spawn::raise_nofile_limit()?;
    eprintln!("open-files limit raised from {old} to {new}");
    let roots = Roots::host();
    let layout = Layout::discover(&roots)?;
    let root = CgroupRoot::create(&layout, &roots, &format!("allot-bench-{}", std::process::id()))
        .map_err(|e| format!("the benchmark needs cgroups (run as root): {e}"))?;
    eprintln!("cgroups: {}", allot_sys::cgroup::tree::describe(&root.dirs));
    let mut fleet = Fleet { root, agents: Vec::new() };
    let mut counts = args.agents.clone();
    counts.sort_unstable();
    let mut text = String::new();
    for n in counts {
        grow(&mut fleet, n)?;
        let agents = &fleet.agents[..n];
        eprintln!("measuring {n} agents ({} rounds each)", args.rounds);
        let (fast, full) = measure_allot(agents, args.rounds)?;
        let sysinfo_us = measure_sysinfo(agents, args.rounds);
        let psutil_us = measure_psutil(agents, args.rounds)?;
        let row = json!({
            "agents": n,
            "processes_per_agent": 2,
            "allot_us": full,
            "allot_fast_us": fast,
            // What the governor spends per agent per second at its default cadence
            // (memory, cpu, processes every second; the rest every fifth second).
            "allot_per_second_us": fast + (full - fast) / 5.0,
            "psutil_us": psutil_us,
            "sysinfo_us": sysinfo_us,
            "psutil_over_allot": psutil_us / full,
            "sysinfo_over_allot": sysinfo_us / full,
            "allot": "memory (+ inactive file from memory.stat), cpu time, pids.current, fds per process, block io",
            "psutil": "oneshot(): memory_info, cpu_times, num_fds, io_counters per process",
            "sysinfo": "refresh_processes_specifics with cpu and memory only",
        });
        if args.json {
            print(&format!("{row}\n"))?;
        } else {
            text.push_str(&format!(
                "{n:>6} agents: allot {full:8.2} us (fast part {fast:.2} us; {:.2} us per second at the default cadence)  psutil {psutil_us:8.2} us ({:.1}x)  sysinfo {sysinfo_us:8.2} us ({:.1}x)\n",
                fast + (full - fast) / 5.0,
                psutil_us / full,
                sysinfo_us / full
            ));
        }
    }
    if !args.json {
        print(&format!("microseconds per agent per full sample (median of {} rounds)\n{text}", args.rounds))?;
    }
    Ok(ExitCode::SUCCESS)
}
