//! What the tests against the real kernel share: a cgroup fixture that
//! removes what it created (also on failure), polling, process states, cpu
//! use measured through a probe, and busy loops whose progress can be read.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use allot_core::rate::{Rate, cpu_millicores};
use allot_sys::Roots;
use allot_sys::SysError;
use allot_sys::actuate::{Actuator, CgroupActuator, SETTLE_TIMEOUT};
use allot_sys::cgroup::Layout;
use allot_sys::cgroup::tree::{AgentCgroup, CgroupRoot};
use allot_sys::notify::Notice;
use allot_sys::probe::Probe;
use allot_sys::spawn::spawn;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// The group every fixture's agents are created in.
const GROUP: &str = "g";

/// Whether missing kernel support fails the tests instead of skipping them (`.ci/run` sets it).
pub fn require_cgroups() -> bool {
    std::env::var("ALLOT_REQUIRE_CGROUPS").is_ok_and(|v| v == "1")
}

/// A root cgroup for one test with its agents and their processes, all removed on drop.
pub struct Fixture {
    pub root: CgroupRoot,
    pub agents: Vec<AgentCgroup>,
    pub children: Vec<Child>,
}

impl Fixture {
    /// A root cgroup named after the test and this process, beneath our own cgroup.
    pub fn create(layout: &Layout, test: &str) -> Result<Fixture, SysError> {
        let name = format!("allot-test-{}-{test}", std::process::id());
        let root = CgroupRoot::create(layout, &Roots::host(), &name)?;
        Ok(Fixture { root, agents: Vec::new(), children: Vec::new() })
    }

    /// A new agent cgroup, killed and removed on drop.
    pub fn agent(&mut self, name: &str) -> AgentCgroup {
        let cg = self.root.agent(GROUP, name).unwrap();
        self.agents.push(cg.clone());
        cg
    }

    /// `sh -c script` started inside the agent's cgroup; its pid.
    pub fn spawn(&mut self, cg: &AgentCgroup, script: &str) -> u32 {
        self.spawn_command(cg, Command::new("sh").args(["-c", script]))
    }

    /// A command started inside the agent's cgroup; its pid.
    pub fn spawn_command(&mut self, cg: &AgentCgroup, cmd: &mut Command) -> u32 {
        let child = spawn(cmd, Some(cg)).unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// The child started with this pid.
    pub fn child(&mut self, pid: u32) -> &mut Child {
        self.children.iter_mut().find(|c| c.id() == pid).unwrap()
    }

    /// Waits for every child started, so that none is left a zombie.
    pub fn reap(&mut self) {
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for cg in &self.agents {
            let _ = CgroupActuator::new(cg.clone()).kill().and_then(|s| s.wait(SETTLE_TIMEOUT));
        }
        for c in &mut self.children {
            let _ = c.kill();
        }
        self.reap();
        for cg in &self.agents {
            let _ = cg.remove();
        }
        if let Ok(g) = self.root.group(GROUP) {
            let _ = g.remove();
        }
        if let Err(e) = self.root.remove() {
            eprintln!("warning: could not remove test cgroup: {e}");
        }
    }
}

/// Polls `f` until it holds or `timeout` passes; whether it held at the end.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A process's state letter from `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...); None once it is gone.
pub fn proc_state(pid: u32) -> Option<u8> {
    std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|b| allot_sys::proc::parse::stat(&b)).map(|s| s.state)
}

/// Milliseconds since the Unix epoch, as the core's time.
pub fn now_ms() -> allot_core::Time {
    allot_core::Time::from_millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

/// A runtime for the tests that wait on a notifier's channel.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

/// The next notice a notifier delivers within `timeout`.
pub fn next_notice(rx: &mut UnboundedReceiver<(String, Notice)>, timeout: Duration) -> (String, Notice) {
    runtime().block_on(async { tokio::time::timeout(timeout, rx.recv()).await }).unwrap().unwrap()
}

/// The cpu use of the probed processes in millicores over `window`, measured after `settle`.
pub fn millicores(probe: &mut impl Probe, settle: Duration, window: Duration) -> u64 {
    let mut meter = Rate::default();
    std::thread::sleep(settle);
    cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms());
    std::thread::sleep(window);
    cpu_millicores(&mut meter, probe.fast().unwrap().cpu_ns, now_ms()).unwrap()
}

/// Three busy shell loops, each appending a byte per step to a file of its
/// own: a file's size is its loop's progress, read atomically.
pub struct Loops {
    dir: tempfile::TempDir,
}

impl Loops {
    pub fn new() -> Loops {
        Loops { dir: tempfile::tempdir().unwrap() }
    }

    /// The shell script that runs the three loops (and waits for them).
    pub fn script(&self) -> String {
        let d = self.dir.path().display();
        format!("for n in 0 1 2; do (while :; do printf x >> {d}/c$n; done) & done; wait")
    }

    /// Each loop's progress so far.
    pub fn progress(&self) -> Vec<u64> {
        (0..3).map(|i| std::fs::metadata(self.dir.path().join(format!("c{i}"))).map_or(0, |m| m.len())).collect()
    }

    /// Whether every loop gets going within 5 s.
    pub fn running(&self) -> bool {
        wait_until(Duration::from_secs(5), || self.progress().iter().all(|c| *c > 10))
    }

    /// Whether every loop moves past `before` within 5 s.
    pub fn resumed_after(&self, before: &[u64]) -> bool {
        wait_until(Duration::from_secs(5), || self.progress().iter().zip(before).all(|(now, then)| now > then))
    }

    /// Asserts that no loop moves for 400 ms; their progress.
    pub fn assert_stopped(&self) -> Vec<u64> {
        let a = self.progress();
        std::thread::sleep(Duration::from_millis(400));
        let b = self.progress();
        assert_eq!(a, b, "no progress while stopped");
        b
    }
}
