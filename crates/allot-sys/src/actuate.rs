//! Actuators: everything allot does to an agent. Each returns its real
//! outcome (what was written and what the kernel answered); errors carry the
//! path and the value. The governor talks to the [`Actuator`] trait; there
//! is one implementation per mode: cgroups, or signals to a `/proc` tree.
//!
//! No actuator call waits. Freezing and killing only write (or signal) and
//! return a [`Settle`]: the wait for the kernel to finish (a freeze taking
//! hold, a tree emptying) blocks and belongs on a blocking thread.

mod settle;
mod steps;

pub(crate) use settle::poll_until;
pub use settle::{Settle, SettleStep};
pub(crate) use steps::CgroupKill;

use crate::cgroup::fs::{self, Written};
use crate::cgroup::tree::{AgentCgroup, V1};
use crate::cgroup::{v1, v2};
use crate::error::SysError;
use crate::signal::{DutyCycle, signal_all};
use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What an actuator did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The files written, with the values the kernel accepted.
    pub writes: Vec<Written>,
    /// What else happened, for the record (signals sent, waits).
    pub detail: String,
}

impl Outcome {
    pub(crate) fn wrote(writes: Vec<Written>) -> Self {
        Outcome { writes, detail: String::new() }
    }
    pub(crate) fn note(detail: impl Into<String>) -> Self {
        Outcome { writes: Vec::new(), detail: detail.into() }
    }
}

/// How long freezing and killing may take before they count as failed: the
/// default timeout for [`Settle::wait`].
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything allot can do to one agent.
pub trait Actuator: Send {
    /// Which mechanism is in force, for messages ("cgroup v1 + v2", "signals").
    fn mode(&self) -> String;
    /// The agent's processes.
    fn pids(&self) -> Result<Vec<u32>, SysError>;
    /// Limit CPU to `millicores` (`None` clears).
    fn set_cpu_limit(&mut self, millicores: Option<u64>) -> Result<Outcome, SysError>;
    /// Set the cpu weight (v2 scale 1..10000).
    fn set_cpu_weight(&mut self, weight: u64) -> Result<Outcome, SysError>;
    /// Set the memory throttle point (`memory.high`; `None` clears).
    fn set_memory_high(&mut self, bytes: Option<u64>) -> Result<Outcome, SysError>;
    /// Set the memory ceiling (`None` clears).
    fn set_memory_max(&mut self, bytes: Option<u64>) -> Result<Outcome, SysError>;
    /// Set the process limit (`None` clears).
    fn set_pids_max(&mut self, max: Option<u64>) -> Result<Outcome, SysError>;
    /// Stop every process of the tree: writes (or signals) now, without
    /// waiting; the returned [`Settle`] waits until the freeze has taken hold.
    fn freeze(&mut self) -> Result<Settle, SysError>;
    /// Resume it.
    fn thaw(&mut self) -> Result<Outcome, SysError>;
    /// Send a signal to every process (SIGTERM for a termination notice).
    fn signal(&mut self, sig: Signal) -> Result<Outcome, SysError>;
    /// Kill the whole tree: writes (or signals) now, without waiting; the
    /// returned [`Settle`] waits (killing again where needed) until no
    /// process of it is left. Wait for it: with the v1 freezer the call only
    /// freezes the cgroup, and the kill and thaw happen in the wait.
    fn kill(&mut self) -> Result<Settle, SysError>;
}

/// The actuator for an agent with its own cgroup.
#[derive(Debug)]
pub struct CgroupActuator {
    cg: AgentCgroup,
}

impl CgroupActuator {
    /// Act on `cg`.
    pub fn new(cg: AgentCgroup) -> Self {
        CgroupActuator { cg }
    }

    /// The cgroup acted on.
    pub fn cgroup(&self) -> &AgentCgroup {
        &self.cg
    }

    fn unsupported(what: &'static str, why: &str) -> SysError {
        SysError::Unsupported { what, why: why.to_owned() }
    }

    /// The v2 directory, where `controller` is enabled in it.
    fn v2_with(&self, controller: V1) -> Option<&Path> {
        self.cg.v2().filter(|_| self.cg.dirs.v2_has(controller.name()))
    }

    /// Writes a controller's setting: with `v2` where the controller is enabled
    /// in the v2 directory, else with `v1` in its v1 directory; `Unsupported`
    /// (for `what`) where neither hierarchy has it.
    fn write_setting(
        &self,
        controller: V1,
        what: &'static str,
        v2: impl FnOnce(&Path) -> Result<Written, SysError>,
        v1: impl FnOnce(&Path) -> Result<Vec<Written>, SysError>,
    ) -> Result<Outcome, SysError> {
        if let Some(d) = self.v2_with(controller) {
            return Ok(Outcome::wrote(vec![v2(d)?]));
        }
        let Some(d) = self.cg.v1(controller) else {
            return Err(Self::unsupported(what, &format!("no {} controller in v1 or v2", controller.name())));
        };
        Ok(Outcome::wrote(v1(d)?))
    }
}

impl Actuator for CgroupActuator {
    fn mode(&self) -> String {
        format!("cgroups: {}", crate::cgroup::tree::describe(&self.cg.dirs))
    }

    fn pids(&self) -> Result<Vec<u32>, SysError> {
        self.cg.pids()
    }

    fn set_cpu_limit(&mut self, millicores: Option<u64>) -> Result<Outcome, SysError> {
        let on_v1 = |d: &Path| match millicores {
            Some(m) => v1::cpu::set_limit(d, m),
            None => v1::cpu::clear_limit(d),
        };
        self.write_setting(V1::Cpu, "cpu limit", |d| v2::cpu::set_max(d, millicores), on_v1)
    }

    fn set_cpu_weight(&mut self, weight: u64) -> Result<Outcome, SysError> {
        self.write_setting(V1::Cpu, "cpu weight", |d| v2::cpu::set_weight(d, weight), |d| Ok(vec![v1::cpu::set_weight(d, weight)?]))
    }

    fn set_memory_high(&mut self, bytes: Option<u64>) -> Result<Outcome, SysError> {
        if let Some(d) = self.v2_with(V1::Memory) {
            return Ok(Outcome::wrote(vec![v2::memory::set_high(d, bytes)?]));
        }
        Err(Self::unsupported(
            "memory.high",
            "cgroup v1 has no memory throttle point (only a ceiling); throttle with the cpu limit instead",
        ))
    }

    fn set_memory_max(&mut self, bytes: Option<u64>) -> Result<Outcome, SysError> {
        let on_v1 = |d: &Path| match bytes {
            Some(b) => v1::memory::set_limit(d, b),
            None => v1::memory::clear_limit(d),
        };
        self.write_setting(V1::Memory, "memory ceiling", |d| v2::memory::set_max(d, bytes), on_v1)
    }

    fn set_pids_max(&mut self, max: Option<u64>) -> Result<Outcome, SysError> {
        // pids.max reads and writes alike in v1 and v2.
        self.write_setting(V1::Pids, "pids.max", |d| v1::pids::set_max(d, max), |d| Ok(vec![v1::pids::set_max(d, max)?]))
    }

    fn freeze(&mut self) -> Result<Settle, SysError> {
        if let Some(d) = self.cg.v2().filter(|d| fs::has(d, "cgroup.freeze")) {
            let w = v2::core::request_freeze(d)?;
            return Ok(steps::v2_frozen(d.to_path_buf(), Outcome::wrote(vec![w])));
        }
        if let Some(d) = self.cg.v1(V1::Freezer) {
            let w = v1::freezer::request_freeze(d)?;
            return Ok(steps::v1_frozen(d.to_path_buf(), Outcome::wrote(vec![w])));
        }
        let pids = self.cg.pids()?;
        let n = signal_all(&pids, Signal::STOP)?;
        Ok(Settle::done(Outcome::note(format!("SIGSTOP to {n} process(es): no freezer"))))
    }

    fn thaw(&mut self) -> Result<Outcome, SysError> {
        if let Some(d) = self.cg.v2().filter(|d| fs::has(d, "cgroup.freeze")) {
            return Ok(Outcome::wrote(vec![v2::core::thaw(d)?]));
        }
        if let Some(d) = self.cg.v1(V1::Freezer) {
            return Ok(Outcome::wrote(vec![v1::freezer::thaw(d)?]));
        }
        let n = signal_all(&self.cg.pids()?, Signal::CONT)?;
        Ok(Outcome::note(format!("SIGCONT to {n} process(es): no freezer")))
    }

    fn signal(&mut self, sig: Signal) -> Result<Outcome, SysError> {
        let n = signal_all(&self.cg.pids()?, sig)?;
        Ok(Outcome::note(format!("{sig:?} to {n} process(es)")))
    }

    fn kill(&mut self) -> Result<Settle, SysError> {
        let mut started = Outcome::default();
        let kill = CgroupKill::start(self.cg.dirs.all().into_iter().map(PathBuf::from).collect(), &mut started)?;
        Ok(kill.settle(started))
    }
}

/// The actuator for an agent without a usable cgroup: signals to the
/// process tree found through `/proc`, and a duty cycle for throttling.
#[derive(Debug)]
pub struct TreeActuator {
    proc_root: PathBuf,
    root: u32,
    duty: Option<DutyCycle>,
}

impl TreeActuator {
    /// Act on the tree rooted at `root`.
    pub fn new(proc_root: PathBuf, root: u32) -> Self {
        TreeActuator { proc_root, root, duty: None }
    }

    fn live(&self) -> Vec<u32> {
        live_tree(&self.proc_root, self.root)
    }

    fn unsupported(what: &'static str) -> SysError {
        SysError::Unsupported { what, why: "no cgroup for this agent (signals-only mode)".into() }
    }
}

/// The tree's processes that are not zombies.
fn live_tree(proc_root: &Path, root: u32) -> Vec<u32> {
    steps::tree_states(proc_root, root).into_iter().map(|(p, _)| p).collect()
}

impl Actuator for TreeActuator {
    fn mode(&self) -> String {
        "signals to the /proc process tree (no cgroup)".into()
    }

    fn pids(&self) -> Result<Vec<u32>, SysError> {
        Ok(self.live())
    }

    fn set_cpu_limit(&mut self, millicores: Option<u64>) -> Result<Outcome, SysError> {
        self.duty = None;
        let Some(m) = millicores else {
            return Ok(Outcome::note("duty cycle stopped"));
        };
        // Approximation: without cgroups the limit becomes a share of wall time for the whole tree.
        let factor = (m as f64 / 1000.0).clamp(0.05, 1.0);
        let (proc_root, root) = (self.proc_root.clone(), self.root);
        self.duty = Some(DutyCycle::start(factor, Duration::from_millis(100), move || live_tree(&proc_root, root)));
        Ok(Outcome::note(format!("SIGSTOP/SIGCONT duty cycle at {:.0}% of each 100 ms", factor * 100.0)))
    }

    fn set_cpu_weight(&mut self, _weight: u64) -> Result<Outcome, SysError> {
        Err(Self::unsupported("cpu weight"))
    }

    fn set_memory_high(&mut self, _bytes: Option<u64>) -> Result<Outcome, SysError> {
        Err(Self::unsupported("memory.high"))
    }

    fn set_memory_max(&mut self, _bytes: Option<u64>) -> Result<Outcome, SysError> {
        Err(Self::unsupported("memory ceiling"))
    }

    fn set_pids_max(&mut self, _max: Option<u64>) -> Result<Outcome, SysError> {
        Err(Self::unsupported("pids.max"))
    }

    fn freeze(&mut self) -> Result<Settle, SysError> {
        // Stopping the duty cycle first: its last act is a SIGCONT to the tree.
        self.duty = None;
        steps::stop_tree(self.proc_root.clone(), self.root)
    }

    fn thaw(&mut self) -> Result<Outcome, SysError> {
        let n = signal_all(&self.live(), Signal::CONT)?;
        Ok(Outcome::note(format!("SIGCONT to {n} process(es)")))
    }

    fn signal(&mut self, sig: Signal) -> Result<Outcome, SysError> {
        let n = signal_all(&self.live(), sig)?;
        Ok(Outcome::note(format!("{sig:?} to {n} process(es)")))
    }

    fn kill(&mut self) -> Result<Settle, SysError> {
        self.duty = None;
        steps::kill_tree(self.proc_root.clone(), self.root)
    }
}
