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
        // A cgroup whose last task has just exited may stay busy for a moment: try again for up to 5 s.
        let mut left = None;
        for _ in 0..100 {
            for a in &self.agents {
                let _ = a.cg.remove();
            }
            if let Ok(g) = self.root.group("bench") {
                let _ = g.remove();
            }
            match self.root.remove() {
                Ok(()) => return,
                Err(e) => left = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(e) = left {
            eprintln!("warning: could not remove the benchmark cgroup: {e}");
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Set by SIGINT or SIGTERM: the benchmark stops and removes what it started.
static STOP: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::LazyLock::new(Default::default);

/// An error when the benchmark was told to stop (its fleet is removed on the way out).
fn check_stop() -> Result<(), Error> {
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        Err("interrupted: the benchmark's agents are stopped and removed".into())
    } else {
        Ok(())
    }
}

fn grow(fleet: &mut Fleet, n: usize) -> Result<(), Error> {
    let start = fleet.agents.len();
    for i in start..n {
        check_stop()?;
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

/// allot's figures for a set of agents, microseconds per agent (medians).
struct AllotCost {
    /// memory (raw usage), cpu time, processes and threads: every sample.
    fast: f64,
    /// open files, block I/O, network: every fifth sample by default.
    slow: f64,
    /// the inactive page cache (`memory.stat`): each sample near a memory
    /// limit, else once a minute (`allot_core::working_set`).
    stat: f64,
    /// How many probes kept all their files open, the hot ones, none.
    kept_open: [usize; 3],
}

impl AllotCost {
    /// Everything read once, as psutil reads it every time.
    fn full(&self) -> f64 {
        self.fast + self.slow + self.stat
    }

    /// What one sample costs per agent on average at the default cadence
    /// (a sample a second, the slow part every fifth), for agents far from
    /// their memory limits (`memory.stat` once a minute) or all near one.
    fn per_sample(&self, near: bool) -> f64 {
        let stat_every = if near { 1.0 } else { SAMPLES_PER_STAT };
        self.fast + self.slow / 5.0 + self.stat / stat_every
    }
}

/// Samples between two reads of `memory.stat` for an agent far from its limits.
const SAMPLES_PER_STAT: f64 = 60.0;

fn measure_allot(agents: &[Agent], rounds: usize) -> Result<AllotCost, Error> {
    // Files kept open as the open-files limit allows, as the daemon keeps them.
    let budget = allot_sys::probe::FdBudget::new(agents.len(), allot_sys::spawn::nofile_limit());
    let mut probes: Vec<CgroupProbe> =
        agents.iter().map(|a| CgroupProbe::within(a.cg.clone(), allot_sys::Roots::host().proc, &budget)).collect::<Result<_, _>>()?;
    let keeps = |k: allot_sys::probe::KeepOpen| probes.iter().filter(|p| p.keeps() == k).count();
    let kept_open = [allot_sys::probe::KeepOpen::All, allot_sys::probe::KeepOpen::Hot, allot_sys::probe::KeepOpen::None].map(keeps);
    let n = probes.len() as f64;
    let (mut fast, mut slow, mut stat) = (Vec::new(), Vec::new(), Vec::new());
    let per_agent = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / n;
    for _ in 0..rounds {
        check_stop()?;
        let t = Instant::now();
        for p in &mut probes {
            std::hint::black_box(p.fast()?);
        }
        fast.push(per_agent(t));
        let t = Instant::now();
        for p in &mut probes {
            std::hint::black_box(p.slow()?);
        }
        slow.push(per_agent(t));
        let t = Instant::now();
        for p in &mut probes {
            std::hint::black_box(p.refresh_working_set()?);
        }
        stat.push(per_agent(t));
    }
    Ok(AllotCost { fast: median(fast), slow: median(slow), stat: median(stat), kept_open })
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
    // The first python3 that has psutil: the one on PATH, else the system's.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import psutil"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
        .ok_or("psutil baseline: no python3 with psutil (pip install psutil, or apt-get install python3-psutil)")?;
    let mut child = Command::new(python)
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
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, STOP.clone())?;
    }
    // Six files kept open per agent, and the rest of what a process needs.
    let want = u64::try_from(args.agents.iter().max().copied().unwrap_or(0))
        .unwrap_or(u64::MAX)
        .saturating_mul(allot_sys::probe::FILES_PER_AGENT as u64)
        .saturating_add(4096);
    let (old, new) = allot_sys::spawn::raise_nofile_limit_to(want)?;
    eprintln!("open-files limit {old}, now {new} (wanted {want})");
    let roots = Roots::host();
    let layout = Layout::discover(&roots)?;
    let root = CgroupRoot::create(&layout, &roots, &format!("allot-bench-{}", std::process::id()))
        .map_err(|e| format!("the benchmark needs cgroups (run as root): {e}"))?;
    eprintln!("cgroups: {}", allot_sys::cgroup::tree::describe(&root.dirs));
    let mut fleet = Fleet { root, agents: Vec::new() };
    let mut counts = args.agents.clone();
    counts.sort_unstable();
    if !args.json {
        print(&format!(
            "microseconds per agent (median of {} rounds); full: everything read once, as psutil does every sample; per sample: \
             a sample a second, the slow part every fifth, memory.stat once a minute far from memory limits (every sample near one)\n",
            args.rounds
        ))?;
    }
    for n in counts {
        grow(&mut fleet, n)?;
        let agents = &fleet.agents[..n];
        eprintln!("measuring {n} agents ({} rounds each)", args.rounds);
        let cost = measure_allot(agents, args.rounds)?;
        check_stop()?;
        let sysinfo_us = measure_sysinfo(agents, args.rounds);
        check_stop()?;
        let psutil_us = measure_psutil(agents, args.rounds)?;
        let (full, far, near) = (cost.full(), cost.per_sample(false), cost.per_sample(true));
        // The governor's share of one core: a sample of every agent each second (the default cadence).
        let share = |us: f64| us * n as f64 / 1e6 * 100.0;
        let row = json!({
            "agents": n,
            "processes_per_agent": 2,
            "probes_keeping_all_hot_none": cost.kept_open,
            "allot_fast_us": cost.fast,
            "allot_slow_us": cost.slow,
            "allot_memory_stat_us": cost.stat,
            "allot_full_us": full,
            "allot_per_sample_us": far,
            "allot_per_sample_near_limits_us": near,
            "governor_core_percent": share(far),
            "governor_core_percent_near_limits": share(near),
            "psutil_us": psutil_us,
            "sysinfo_us": sysinfo_us,
            "psutil_over_allot_full": psutil_us / full,
            "psutil_over_allot_per_sample": psutil_us / far,
            "sysinfo_over_allot_full": sysinfo_us / full,
            "allot": "fast: memory.usage, cpu time, cgroup.procs, pids.current; slow: fds per process, block io, network; memory.stat: the inactive page cache",
            "psutil": "oneshot(): memory_info, cpu_times, num_fds, io_counters per process, every sample",
            "sysinfo": "refresh_processes_specifics with cpu and memory only",
        });
        if args.json {
            print(&format!("{row}\n"))?;
        } else {
            print(&format!(
                "{n:>6} agents: allot full {full:6.2} us (fast {:.2}, slow {:.2}, memory.stat {:.2}{}); per sample at the default cadence {far:.2} us \
                 ({near:.2} near memory limits): {:.2} % of a core ({:.2} %)\n        psutil {psutil_us:7.2} us ({:.1}x allot full, {:.1}x per sample)  sysinfo {sysinfo_us:7.2} us ({:.1}x allot full)\n",
                cost.fast,
                cost.slow,
                cost.stat,
                match cost.kept_open {
                    [_, 0, 0] => String::new(),
                    [all, hot, none] =>
                        format!("; under the open-files limit {all} probes keep all their files open, {hot} the hot ones, {none} none"),
                },
                share(far),
                share(near),
                psutil_us / full,
                psutil_us / far,
                sysinfo_us / full
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
