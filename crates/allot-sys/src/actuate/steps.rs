//! What each [`Settle`] waits for: a cgroup freeze taking hold (v2
//! `cgroup.events`, v1 `freezer.state`), a cgroup emptying after a kill
//! (repeating v1 freeze/kill/thaw rounds when a late fork shows up), and a
//! `/proc` process tree stopping or dying under signals.

use super::Outcome;
use super::settle::{Settle, SettleStep};
use crate::cgroup::{fs, v1, v2};
use crate::error::SysError;
use crate::proc::tree::descendants;
use crate::signal::signal_all;
use rustix::process::Signal;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A kill round is repeated after this long even without a new process (a
/// recycled pid, a signal lost to a fork in progress).
const REROUND: Duration = Duration::from_millis(100);

/// Wait until `cgroup.events` in `dir` says `frozen 1`.
pub(super) fn v2_frozen(dir: PathBuf, started: Outcome) -> Settle {
    Settle::polling("freeze", started, move |out| {
        if v2::core::is_frozen(&dir)? {
            out.detail = "frozen (cgroup.events frozen 1)".into();
            return Ok(SettleStep::Done);
        }
        Ok(SettleStep::Pending(format!("{} still says frozen 0", dir.join("cgroup.events").display())))
    })
}

/// Wait until `freezer.state` in `dir` reads FROZEN.
pub(super) fn v1_frozen(dir: PathBuf, started: Outcome) -> Settle {
    Settle::polling("freeze", started, move |out| {
        let state = v1::freezer::state(&dir)?;
        if state == "FROZEN" {
            out.detail = "frozen (freezer.state FROZEN)".into();
            return Ok(SettleStep::Done);
        }
        Ok(SettleStep::Pending(format!("{} still {state}", dir.join("freezer.state").display())))
    })
}

/// How a cgroup's processes are killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// v2 `cgroup.kill`: race-free, once.
    Kill,
    /// v1 freezer: freeze, SIGKILL every task, thaw; again while processes remain.
    Freezer,
    /// SIGKILL to every listed process; again while processes remain.
    Signals,
}

/// Killing every process of a cgroup, given only its directories: through
/// `cgroup.kill` where a directory has it, else through the v1 freezer
/// (`freezer.state`), else by signals. Directories that do not exist are
/// left out.
#[derive(Debug)]
pub(crate) struct CgroupKill {
    dirs: Vec<PathBuf>,
    /// The directory written to (`cgroup.kill` or `freezer.state`).
    dir: Option<PathBuf>,
    via: Via,
    /// A freeze was requested and the tasks are not killed yet.
    freezing: bool,
    rounds: u32,
    last_round: Instant,
    /// Pids signalled (or in the cgroup when `cgroup.kill` was written).
    killed: BTreeSet<u32>,
    /// Every pid seen in the cgroup since the kill began.
    seen: BTreeSet<u32>,
}

impl CgroupKill {
    /// Start killing (one write or one round of signals; no waiting); what was done goes into `out`.
    pub(crate) fn start(dirs: Vec<PathBuf>, out: &mut Outcome) -> Result<CgroupKill, SysError> {
        let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
        let find = |file: &str| dirs.iter().find(|d| fs::has(d, file)).cloned();
        let (via, dir) = match (find("cgroup.kill"), find("freezer.state")) {
            (Some(d), _) => (Via::Kill, Some(d)),
            (None, Some(d)) => (Via::Freezer, Some(d)),
            (None, None) => (Via::Signals, None),
        };
        let mut k = CgroupKill {
            dirs,
            dir,
            via,
            freezing: false,
            rounds: 0,
            last_round: Instant::now(),
            killed: BTreeSet::new(),
            seen: BTreeSet::new(),
        };
        let n = k.procs()?.len();
        k.round(out)?;
        out.detail = match via {
            Via::Kill => format!("cgroup.kill with {n} process(es) in the cgroup"),
            Via::Freezer => format!("freezing {n} process(es) to kill them (v1 freezer)"),
            Via::Signals => format!("SIGKILL to {n} process(es): no cgroup.kill, no freezer"),
        };
        Ok(k)
    }

    /// Every pid seen in the cgroup since the kill began.
    pub(crate) fn seen(&self) -> Vec<u32> {
        self.seen.iter().copied().collect()
    }

    /// The pids in every directory (directories gone count as empty).
    fn procs(&mut self) -> Result<Vec<u32>, SysError> {
        let mut all = BTreeSet::new();
        for d in &self.dirs {
            match fs::procs(d) {
                Ok(p) => all.extend(p),
                Err(SysError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.seen.extend(&all);
        Ok(all.into_iter().collect())
    }

    /// Whether the v2 cgroup (with its descendants) still has processes.
    fn populated(&self) -> Result<bool, SysError> {
        let Some(d) = self.dir.as_ref().filter(|_| self.via == Via::Kill) else {
            return Ok(false);
        };
        match v2::core::events(d) {
            Ok(e) => Ok(e.populated),
            Err(SysError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn round(&mut self, out: &mut Outcome) -> Result<(), SysError> {
        self.rounds += 1;
        self.last_round = Instant::now();
        match (self.via, &self.dir) {
            (Via::Kill, Some(d)) => {
                out.writes.push(v2::core::kill(d)?);
                let pids = self.procs()?;
                self.killed.extend(pids);
            }
            (Via::Freezer, Some(d)) => {
                out.writes.push(v1::freezer::request_freeze(d)?);
                self.freezing = true;
            }
            _ => {
                let pids = self.procs()?;
                signal_all(&pids, Signal::KILL)?;
                self.killed.extend(pids);
            }
        }
        Ok(())
    }

    /// One look: kill the frozen tasks once the freeze took hold; done when
    /// no process is left; a new round when a process not yet killed shows up.
    pub(crate) fn step(&mut self, out: &mut Outcome) -> Result<SettleStep, SysError> {
        if let Some(d) = self.dir.clone().filter(|_| self.freezing) {
            if !v1::freezer::is_frozen(&d)? {
                let state = v1::freezer::state(&d)?;
                return Ok(SettleStep::Pending(format!("{} still {state} (round {})", d.join("freezer.state").display(), self.rounds)));
            }
            let pids = fs::procs(&d)?;
            signal_all(&pids, Signal::KILL)?;
            self.killed.extend(pids);
            out.writes.push(v1::freezer::thaw(&d)?);
            self.freezing = false;
        }
        let left = self.procs()?;
        if left.is_empty() && !self.populated()? {
            let how = match self.via {
                Via::Kill => "cgroup.kill".to_owned(),
                Via::Freezer => format!("SIGKILL through the v1 freezer in {} round(s)", self.rounds),
                Via::Signals => format!("SIGKILL in {} round(s)", self.rounds),
            };
            out.detail = format!("{how}; {} process(es) killed; tree empty", self.seen.len());
            return Ok(SettleStep::Done);
        }
        let fresh = left.iter().any(|p| !self.killed.contains(p));
        if self.via != Via::Kill && (fresh || self.last_round.elapsed() >= REROUND) {
            self.round(out)?;
        }
        Ok(SettleStep::Pending(if left.is_empty() {
            "the cgroup is still populated (cgroup.events)".to_owned()
        } else {
            format!("processes {left:?} still present")
        }))
    }

    /// Kill and wait as a [`Settle`].
    pub(crate) fn settle(mut self, started: Outcome) -> Settle {
        Settle::polling("kill", started, move |out| self.step(out))
    }
}

/// The tree's processes that are not zombies, with their states.
pub(super) fn tree_states(proc_root: &Path, root: u32) -> Vec<(u32, u8)> {
    descendants(proc_root, root)
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(proc_root.join(p.to_string()).join("stat")).ok()?;
            let s = crate::proc::parse::stat(&bytes)?;
            (s.state != b'Z' && s.state != b'X').then_some((p, s.state))
        })
        .collect()
}

/// SIGSTOP every process of the tree not stopped yet; the pids signalled.
fn stop_running(proc_root: &Path, root: u32) -> Result<Vec<u32>, SysError> {
    let running: Vec<u32> = tree_states(proc_root, root).into_iter().filter(|(_, s)| !matches!(s, b'T' | b't')).map(|(p, _)| p).collect();
    signal_all(&running, Signal::STOP)?;
    Ok(running)
}

/// Stop the tree: SIGSTOP now, then again to any process not stopped yet
/// (new children) until every one is.
pub(super) fn stop_tree(proc_root: PathBuf, root: u32) -> Result<Settle, SysError> {
    let mut stopped: BTreeSet<u32> = stop_running(&proc_root, root)?.into_iter().collect();
    let started = Outcome::note(format!("SIGSTOP to {} process(es)", stopped.len()));
    Ok(Settle::polling("freeze", started, move |out| {
        let running = stop_running(&proc_root, root)?;
        stopped.extend(&running);
        if running.is_empty() {
            out.detail = format!("SIGSTOP to {} process(es); every one stopped", stopped.len());
            return Ok(SettleStep::Done);
        }
        Ok(SettleStep::Pending(format!("processes {running:?} not stopped yet")))
    }))
}

/// One kill round on a tree: stop every process first so that none forks
/// between the listing and the kill, then SIGKILL all of them. The number signalled.
fn kill_round(proc_root: &Path, root: u32) -> Result<usize, SysError> {
    let live: Vec<u32> = tree_states(proc_root, root).into_iter().map(|(p, _)| p).collect();
    if live.is_empty() {
        return Ok(0);
    }
    signal_all(&live, Signal::STOP)?;
    signal_all(&descendants(proc_root, root), Signal::KILL)
}

/// Kill the tree: one round now, more until no live process is left.
pub(super) fn kill_tree(proc_root: PathBuf, root: u32) -> Result<Settle, SysError> {
    let n = kill_round(&proc_root, root)?;
    if n == 0 {
        return Ok(Settle::done(Outcome::note("the tree is already empty")));
    }
    let mut rounds = 1;
    let started = Outcome::note(format!("SIGKILL to {n} process(es) of the tree"));
    Ok(Settle::polling("kill", started, move |out| {
        let live: Vec<u32> = tree_states(&proc_root, root).into_iter().map(|(p, _)| p).collect();
        if live.is_empty() {
            out.detail = format!("SIGKILL to the tree in {rounds} round(s); tree empty");
            return Ok(SettleStep::Done);
        }
        rounds += 1;
        kill_round(&proc_root, root)?;
        Ok(SettleStep::Pending(format!("processes {live:?} still present")))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::{Actuator, CgroupActuator};
    use crate::cgroup::tree::{AgentCgroup, Dirs, V1};

    /// A fake v2 directory whose processes never leave and which never freezes.
    /// The pids are above any pid_max, so nothing real could be signalled.
    fn stuck_v2() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (file, text) in [
            ("cgroup.procs", "999999998\n999999999\n"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("cgroup.kill", ""),
            ("cgroup.freeze", "0\n"),
        ] {
            std::fs::write(t.path().join(file), text).unwrap();
        }
        t
    }

    fn actuator(v2: Option<&Path>, freezer: Option<&Path>) -> CgroupActuator {
        let mut dirs = Dirs { v2: v2.map(Path::to_path_buf), ..Dirs::default() };
        if let Some(f) = freezer {
            dirs.v1.insert(V1::Freezer, f.to_path_buf());
        }
        CgroupActuator::new(AgentCgroup { dirs })
    }

    /// How long the tests let a settle wait.
    const SHORT: Duration = Duration::from_millis(50);

    /// `act` on the stuck v2 cgroup in `t`: it writes `file` and returns at once; the settle it returns.
    fn started(t: &tempfile::TempDir, file: &str, act: impl FnOnce(&mut CgroupActuator) -> Result<Settle, SysError>) -> Settle {
        let settle = act(&mut actuator(Some(t.path()), None)).unwrap();
        assert!(!settle.is_done());
        assert_eq!(settle.started().writes[0].path, t.path().join(file));
        settle
    }

    #[test]
    fn a_v2_freeze_writes_returns_at_once_and_times_out_if_never_frozen() {
        let t = stuck_v2();
        let settle = started(&t, "cgroup.freeze", |a| a.freeze());
        assert_eq!(std::fs::read_to_string(t.path().join("cgroup.freeze")).unwrap(), "1");
        let e = settle.wait(SHORT).unwrap_err();
        assert!(matches!(e, SysError::Timeout { what: "freeze", .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("freeze did not finish within 50ms: ") && msg.contains("frozen 0"), "{msg}");
        // Once the kernel says frozen, the same wait succeeds.
        std::fs::write(t.path().join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        let out = actuator(Some(t.path()), None).freeze().unwrap().wait(SHORT).unwrap();
        assert_eq!(out.writes.len(), 1);
        assert!(out.detail.contains("frozen"), "{}", out.detail);
    }

    #[test]
    fn a_v1_freeze_stuck_in_freezing_times_out() {
        let t = tempfile::tempdir().unwrap();
        let w = v1::freezer::request_freeze(t.path()).unwrap();
        // The kernel would answer FREEZING while a task resists.
        std::fs::write(t.path().join("freezer.state"), "FREEZING\n").unwrap();
        let e = v1_frozen(t.path().to_path_buf(), Outcome::wrote(vec![w])).wait(SHORT).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("freeze did not finish within 50ms: ") && msg.ends_with("freezer.state still FREEZING"), "{msg}");
    }

    #[test]
    fn a_v2_kill_times_out_naming_the_processes_left() {
        let t = stuck_v2();
        let settle = started(&t, "cgroup.kill", |a| a.kill());
        let e = settle.wait(SHORT).unwrap_err();
        assert!(matches!(e, SysError::Timeout { what: "kill", waited, .. } if waited == SHORT), "{e:?}");
        assert_eq!(e.to_string(), "kill did not finish within 50ms: processes [999999998, 999999999] still present");
    }

    #[test]
    fn a_v1_kill_waits_for_the_freeze_before_killing() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.procs"), "").unwrap();
        std::fs::write(t.path().join("freezer.state"), "THAWED\n").unwrap();
        let mut out = Outcome::default();
        let mut k = CgroupKill::start(vec![t.path().to_path_buf(), t.path().join("gone")], &mut out).unwrap();
        assert_eq!(out.writes.len(), 1, "the freeze was requested: {out:?}");
        std::fs::write(t.path().join("freezer.state"), "FREEZING\n").unwrap();
        assert!(matches!(k.step(&mut out).unwrap(), SettleStep::Pending(p) if p.contains("FREEZING (round 1)")));
        std::fs::write(t.path().join("freezer.state"), "FROZEN\n").unwrap();
        assert_eq!(k.step(&mut out).unwrap(), SettleStep::Done);
        assert_eq!(out.writes.iter().map(|w| w.value.as_str()).collect::<Vec<_>>(), ["FROZEN", "THAWED"]);
        assert!(out.detail.contains("1 round(s)") && out.detail.ends_with("tree empty"), "{}", out.detail);
    }
}
