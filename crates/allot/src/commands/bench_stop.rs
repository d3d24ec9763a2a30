//! `allot bench stop`: how long `allot up` takes to stop N agents (a notice
//! to each, grace 0, the kill, every cgroup removed, allot exited), measured
//! from its SIGTERM to its exit, on real agents in real cgroups; then a check
//! that no agent process and no cgroup of the run is left.

use super::{Error, print};
use crate::cli::BenchStopArgs;
use allot_sys::Roots;
use allot_sys::cgroup::Layout;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `allot up` under measurement: stopped (SIGTERM, then SIGKILL) if still running when dropped.
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = allot_sys::signal::signal_all(&[self.child.id()], rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The agents running, their pids with their start times (to tell a pid
/// used again from a survivor), and how many are in each state.
struct Census {
    running: usize,
    pids: Vec<(u32, u64)>,
    states: String,
}

fn running(sock: &Path) -> Result<Census, Error> {
    let (status, v) = crate::client::request(sock, "GET", "/v1/agents", None)?;
    if status != 200 {
        return Err(crate::client::failure(status, &v).into());
    }
    let agents = v.as_array().ok_or("GET /v1/agents answered no list")?;
    let proc_root = Roots::host().proc;
    let up = agents.iter().filter(|a| a["state"] == "running").count();
    let mut states: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for a in agents {
        let what = match a["exit"].as_str() {
            Some(why) => format!("{} ({why})", a["state"].as_str().unwrap_or("?")),
            None => a["state"].as_str().unwrap_or("?").to_owned(),
        };
        *states.entry(what).or_default() += 1;
    }
    let states = states.iter().map(|(s, k)| format!("{k} {s}")).collect::<Vec<_>>().join(", ");
    let pids = agents
        .iter()
        .flat_map(|a| a["pids"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
        .filter_map(|p| allot_sys::proc::stat(&proc_root, p).map(|s| (p, s.starttime)))
        .collect();
    Ok(Census { running: up, pids, states })
}

pub(crate) fn run(args: &BenchStopArgs) -> Result<ExitCode, Error> {
    let n = args.agents;
    if n == 0 {
        return Err("--agents needs a count above 0".into());
    }
    let (old, new) = allot_sys::spawn::raise_nofile_limit_to(u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(4).saturating_add(4096))?;
    eprintln!("open-files limit {old}, now {new}");
    let dir = tempfile::tempdir()?;
    let mut fleet = String::from("[policy]\nterminate_grace = \"0s\"\nsample_interval = \"1s\"\n");
    for i in 0..n {
        fleet.push_str(&format!("[[agents]]\nname = \"s{i}\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000000\"]\n"));
    }
    let fleet_file = dir.path().join("fleet.toml");
    std::fs::write(&fleet_file, fleet)?;
    let cgroup = format!("allot-bench-stop-{}", std::process::id());
    let layout = Layout::discover(&Roots::host()).map_err(|e| format!("the benchmark needs cgroups: {e}"))?;
    let root_dirs: Vec<PathBuf> = layout.dirs().into_iter().map(|d| d.join(&cgroup)).collect();
    let (sock, log) = (dir.path().join("up.sock"), dir.path().join("up.log"));
    let child = Command::new(std::env::current_exe()?)
        .arg("up")
        .arg(&fleet_file)
        .arg("--quiet")
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(["--cgroup-name", &cgroup])
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()?;
    let mut up = Up { child };
    let said = |log: &Path| std::fs::read_to_string(log).unwrap_or_default().trim().to_owned();
    // Every agent started and running.
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(20 * n as u64);
    let mut last_said = Instant::now();
    let mut states = String::new();
    let pids = loop {
        if let Some(st) = up.child.try_wait()? {
            return Err(format!("allot up ended ({st}) before its agents ran; it said: {}", said(&log)).into());
        }
        if Instant::now() > deadline {
            return Err(format!("not every agent was running in time ({states}); allot up said: {}", said(&log)).into());
        }
        if let Ok(census) = running(&sock) {
            states = census.states;
            if census.running == n {
                break census.pids;
            }
            if last_said.elapsed() > Duration::from_secs(2) {
                eprintln!("{} of {n} agents running ({states})", census.running);
                last_said = Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{n} agents running ({} processes); stopping allot up", pids.len());
    let t0 = Instant::now();
    allot_sys::signal::signal_all(&[up.child.id()], rustix::process::Signal::TERM)?;
    let status = up.child.wait()?;
    let took = t0.elapsed();
    let proc_root = Roots::host().proc;
    let survivors: Vec<u32> = pids
        .iter()
        .filter(|(p, start)| allot_sys::proc::stat(&proc_root, *p).is_some_and(|s| s.starttime == *start && s.state != b'Z'))
        .map(|(p, _)| *p)
        .collect();
    let left: Vec<&PathBuf> = root_dirs.iter().filter(|d| d.exists()).collect();
    let ms = took.as_secs_f64() * 1e3;
    let row = json!({
        "agents": n, "processes": pids.len(), "stop_ms": ms, "allot_exit": status.code(),
        "processes_left": survivors.len(), "cgroups_left": left.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
    });
    if args.json {
        print(&format!("{row}\n"))?;
    } else {
        print(&format!(
            "stopped {n} agents ({} processes) in {ms:.0} ms: SIGTERM to allot up until it exited ({status}), each agent given its notice, \
             grace 0, killed and its cgroup removed; processes left {}, cgroup directories left {}\n",
            pids.len(),
            survivors.len(),
            left.len()
        ))?;
    }
    if !survivors.is_empty() || !left.is_empty() {
        return Err(format!("the stop left processes {survivors:?} and cgroups {left:?}").into());
    }
    Ok(ExitCode::SUCCESS)
}
