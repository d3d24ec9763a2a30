//! A scripted backend for governor tests: usage as a function of time per
//! agent, actuators that record their calls (with the time and the agent),
//! and a kill whose kernel wait can be made slow (a real blocking sleep,
//! as a tree that takes seconds to die would be).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use allot::governor::backend::{Backend, Exit, Leader, Started};
use allot::governor::{Governor, Options, ViewMode};
use allot_sys::SysError;
use allot_sys::actuate::{Actuator, Outcome, Settle, SettleStep};
use allot_sys::probe::{Fast, IoFrom, Measure, Probe, Slow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Usage at a time since the run started (ms): (memory bytes, cpu millicores, processes).
pub type Script = Arc<dyn Fn(u64) -> (u64, u64, u64) + Send + Sync>;

/// Every actuator call: (ms since start, agent, call).
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<(u64, String, String)>>>);

impl Log {
    pub fn push(&self, t: u64, agent: &str, s: String) {
        self.0.lock().unwrap().push((t, agent.to_owned(), s));
    }
    /// The calls of every agent: (ms, call).
    pub fn calls(&self) -> Vec<(u64, String)> {
        self.0.lock().unwrap().iter().map(|(t, _, s)| (*t, s.clone())).collect()
    }
    /// The calls made on one agent.
    pub fn of(&self, agent: &str) -> Vec<(u64, String)> {
        self.0.lock().unwrap().iter().filter(|(_, a, _)| a == agent).map(|(t, _, s)| (*t, s.clone())).collect()
    }
    /// When the first call starting with `prefix` was made.
    pub fn has(&self, prefix: &str) -> Option<u64> {
        self.calls().into_iter().find(|(_, s)| s.starts_with(prefix)).map(|(t, _)| t)
    }
}

pub fn elapsed(start: tokio::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Inactive page cache at a time since the run started (ms), in bytes.
pub type Cache = Arc<dyn Fn(u64) -> u64 + Send + Sync>;

struct FakeProbe {
    script: Script,
    start: tokio::time::Instant,
    cpu_ns: u64,
    last: u64,
    dead: Arc<Mutex<Option<Exit>>>,
    /// The agent's inactive page cache over time (the script gives its working set).
    cache: Option<Cache>,
    /// The cache figure as last read (`refresh_working_set`).
    cache_read: u64,
    agent: String,
    log: Log,
}

impl Probe for FakeProbe {
    fn fast(&mut self) -> Result<Fast, SysError> {
        if self.dead.lock().unwrap().is_some() {
            return Err(SysError::Unsupported { what: "probe", why: "gone".into() });
        }
        let t = elapsed(self.start);
        let (memory, cpu_m, processes) = (self.script)(t);
        // Integrate cpu: millicores over the elapsed milliseconds.
        self.cpu_ns += cpu_m * (t - self.last) * 1000;
        self.last = t;
        // As a cgroup counts it: the working set plus the page cache, less the cache as last read.
        let raw = memory + self.cache.as_ref().map_or(0, |c| c(t));
        Ok(Fast { memory: raw.saturating_sub(self.cache_read), memory_raw: raw, cpu_ns: self.cpu_ns, processes, threads: processes })
    }
    fn refresh_working_set(&mut self) -> Result<Option<u64>, SysError> {
        let Some(cache) = &self.cache else { return Ok(None) };
        let t = elapsed(self.start);
        self.cache_read = cache(t);
        self.log.push(t, &self.agent, "memory.stat".into());
        Ok(Some(self.cache_read))
    }
    fn slow(&mut self) -> Result<Slow, SysError> {
        Ok(Slow { files: 3, io_bytes: 0, io_from: IoFrom::Proc, network_bytes: Measure::Unsupported })
    }
    fn connections(&mut self) -> Result<u64, SysError> {
        Ok(0)
    }
    fn proc_root(&self) -> &Path {
        Path::new("/proc")
    }
    fn pids(&self) -> Result<Vec<u32>, SysError> {
        Ok(vec![1])
    }
}

struct FakeActuator {
    agent: String,
    log: Log,
    start: tokio::time::Instant,
    dead: Arc<Mutex<Option<Exit>>>,
    slow_kill: Option<Duration>,
    term_kills: bool,
}

impl FakeActuator {
    fn rec(&self, s: String) -> Result<Outcome, SysError> {
        self.log.push(elapsed(self.start), &self.agent, s.clone());
        Ok(Outcome { writes: Vec::new(), detail: s })
    }
}

impl Actuator for FakeActuator {
    fn mode(&self) -> String {
        "fake".into()
    }
    fn pids(&self) -> Result<Vec<u32>, SysError> {
        Ok(vec![1])
    }
    fn set_cpu_limit(&mut self, m: Option<u64>) -> Result<Outcome, SysError> {
        // As the kernel refuses a cfs quota beyond what it can represent.
        if m.is_some_and(|m| m > 64_000) {
            let source = std::io::Error::from_raw_os_error(22);
            return Err(SysError::Write { path: "cpu.cfs_quota_us".into(), value: format!("{m:?}"), source });
        }
        self.rec(format!("cpu_limit {m:?}"))
    }
    fn set_cpu_weight(&mut self, w: u64) -> Result<Outcome, SysError> {
        self.rec(format!("cpu_weight {w}"))
    }
    fn set_memory_high(&mut self, b: Option<u64>) -> Result<Outcome, SysError> {
        self.rec(format!("memory_high {b:?}"))
    }
    fn set_memory_max(&mut self, b: Option<u64>) -> Result<Outcome, SysError> {
        self.rec(format!("memory_max {b:?}"))
    }
    fn set_pids_max(&mut self, m: Option<u64>) -> Result<Outcome, SysError> {
        self.rec(format!("pids_max {m:?}"))
    }
    fn freeze(&mut self) -> Result<Settle, SysError> {
        Ok(Settle::done(self.rec("freeze".into())?))
    }
    fn thaw(&mut self) -> Result<Outcome, SysError> {
        self.rec("thaw".into())
    }
    fn signal(&mut self, sig: rustix::process::Signal) -> Result<Outcome, SysError> {
        if self.term_kills && sig == rustix::process::Signal::TERM {
            *self.dead.lock().unwrap() = Some(Exit::Signal(15));
        }
        self.rec(format!("signal {sig:?}"))
    }
    fn kill(&mut self) -> Result<Settle, SysError> {
        let first = self.rec("kill".into())?;
        let dead = Arc::clone(&self.dead);
        match self.slow_kill {
            None => {
                *dead.lock().unwrap() = Some(Exit::Signal(9));
                Ok(Settle::done(first))
            }
            Some(d) => Ok(Settle::polling("kill", first, move |_| {
                // A tree that takes this long to die: a real blocking wait.
                std::thread::sleep(d);
                *dead.lock().unwrap() = Some(Exit::Signal(9));
                Ok(SettleStep::Done)
            })),
        }
    }
}

struct FakeLeader {
    dead: Arc<Mutex<Option<Exit>>>,
    started: tokio::time::Instant,
    exit_after: Option<u64>,
}

impl Leader for FakeLeader {
    fn pid(&self) -> u32 {
        u32::MAX - 1
    }
    fn try_wait(&mut self) -> Option<Exit> {
        if let Some(ms) = self.exit_after {
            if elapsed(self.started) >= ms {
                *self.dead.lock().unwrap() = Some(Exit::Code(1));
            }
        }
        *self.dead.lock().unwrap()
    }
}

/// The scripted backend.
pub struct FakeBackend {
    pub script: Script,
    /// Scripts of particular agents (others follow `script`).
    pub scripts: BTreeMap<String, Script>,
    pub log: Log,
    pub start: tokio::time::Instant,
    pub exit_after: Option<u64>,
    /// Agents whose kill takes this long to settle.
    pub slow_kill: BTreeMap<String, Duration>,
    /// Agents die of SIGTERM (the notice of a terminate) instead of waiting for the kill.
    pub term_kills: bool,
    /// The inactive page cache of particular agents (others have none: their memory is a tree's).
    pub caches: BTreeMap<String, Cache>,
}

impl FakeBackend {
    pub fn new(script: impl Fn(u64) -> (u64, u64, u64) + Send + Sync + 'static, log: Log) -> Self {
        FakeBackend {
            script: Arc::new(script),
            scripts: BTreeMap::new(),
            log,
            start: tokio::time::Instant::now(),
            exit_after: None,
            slow_kill: BTreeMap::new(),
            term_kills: false,
            caches: BTreeMap::new(),
        }
    }
}

impl Backend for FakeBackend {
    fn mode(&self) -> String {
        "fake".into()
    }
    fn start(
        &mut self,
        def: &allot::fleet::AgentDef,
        _env: &[(String, String)],
        before_exec: &mut dyn FnMut(&mut dyn Actuator),
    ) -> Result<Started, String> {
        let name = def.spec.id.to_string();
        let dead = Arc::new(Mutex::new(None));
        self.log.push(elapsed(self.start), &name, "start".into());
        let script = self.scripts.get(&name).cloned().unwrap_or_else(|| self.script.clone());
        let mut actuator = FakeActuator {
            agent: name.clone(),
            log: self.log.clone(),
            start: self.start,
            dead: dead.clone(),
            slow_kill: self.slow_kill.get(&name).copied(),
            term_kills: self.term_kills,
        };
        before_exec(&mut actuator);
        self.log.push(elapsed(self.start), &name, "exec".into());
        Ok(Started {
            leader: Box::new(FakeLeader { dead: dead.clone(), started: tokio::time::Instant::now(), exit_after: self.exit_after }),
            probe: Box::new(FakeProbe {
                script,
                start: self.start,
                cpu_ns: 0,
                last: 0,
                dead,
                cache: self.caches.get(&name).cloned(),
                cache_read: 0,
                agent: name.clone(),
                log: self.log.clone(),
            }),
            actuator: Box::new(actuator),
            cgroup: None,
        })
    }
    fn adopt(&mut self, _dirs: &[PathBuf], _pid: u32) -> Result<Started, String> {
        Err("the scripted backend adopts nothing".into())
    }
    fn adopt_pid(&mut self, _def: &allot::fleet::AgentDef, _pid: u32, _move_it: bool) -> Result<Started, String> {
        Err("the scripted backend adopts nothing".into())
    }
    fn group_actuator(&mut self, _group: &str) -> Option<Box<dyn Actuator>> {
        None
    }
    fn cleanup(&mut self, _cg: Option<&allot_sys::cgroup::tree::AgentCgroup>) {}
    fn shutdown(&mut self) {}
}

/// Options for a quiet run on `state` without kernel notifications.
pub fn options(state: PathBuf) -> Options {
    Options {
        state,
        events_file: None,
        run_for: None,
        view: ViewMode::Quiet,
        cgroup_name: "unused".into(),
        notify: false,
        socket: None,
        readopt: false,
        leave_running: false,
    }
}

/// A governor over a fleet text with the scripted backend.
pub fn governor(fleet: &str, backend: FakeBackend, state: PathBuf) -> Governor<FakeBackend> {
    Governor::new(allot::fleet::parse(fleet).unwrap(), backend, &options(state)).unwrap()
}

/// A fleet text: `[policy]` with these settings, and one agent per `(name, settings)`
/// in the standard group, running the scripted backend's command.
pub fn fleet(policy: &str, agents: &[(&str, &str)]) -> String {
    let agents: String = agents
        .iter()
        .map(|(name, settings)| format!("\n[[agents]]\nname = \"{name}\"\ngroup = \"standard_agent\"\ncommand = [\"fake\"]\n{settings}\n"))
        .collect();
    format!("[policy]\n{policy}\n{agents}")
}

/// A memory limit of 10Mi soft, 20Mi hard, with `action`: the scripts' 30Mi is over it, 5Mi under.
pub fn memory_limit(action: &str) -> String {
    format!("limits.memory = {{ soft = \"10Mi\", hard = \"20Mi\", action = \"{action}\" }}")
}
