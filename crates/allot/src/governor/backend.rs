//! How the governor starts agents and reaches the kernel: the [`Backend`]
//! trait, with the real implementation (cgroups, or a `/proc` process tree
//! when cgroups cannot be used) and room for a scripted fake in tests.

use crate::fleet::AgentDef;
use allot_sys::Roots;
use allot_sys::actuate::{Actuator, CgroupActuator, TreeActuator};
use allot_sys::cgroup::tree::{AgentCgroup, CgroupRoot};
use allot_sys::cgroup::{Layout, OomCounters};
use allot_sys::lockfile::{LockError, LockFile};
use allot_sys::probe::FdLease;
use allot_sys::probe::{CgroupProbe, Probe, TreeProbe};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// How an agent's leader process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with a status code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It is gone, and its status is unknown (an adopted process is not our child).
    Unknown,
}

impl Exit {
    /// Whether this counts as a failure for restarts.
    pub fn failed(self) -> bool {
        !matches!(self, Exit::Code(0) | Exit::Unknown)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => write!(f, "exited (status unknown: not allot's child after a restart)"),
        }
    }
}

/// A started agent's leader process.
pub trait Leader: Send {
    /// Its pid.
    fn pid(&self) -> u32;
    /// Whether it has ended, without blocking.
    fn try_wait(&mut self) -> Option<Exit>;
}

/// What starting an agent gives the governor.
pub struct Started {
    /// The leader process.
    pub leader: Box<dyn Leader>,
    /// How to measure it.
    pub probe: Box<dyn Probe>,
    /// How to act on it.
    pub actuator: Box<dyn Actuator>,
    /// Its cgroup, when it has one.
    pub cgroup: Option<AgentCgroup>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Started(pid {})", self.leader.pid())
    }
}

/// Starts agents and acts on groups.
pub trait Backend {
    /// A description of the mode in force, for the user.
    fn mode(&self) -> String;
    /// Start an agent with extra environment. `before_exec` gets the agent's
    /// actuator before its command runs (its cgroup exists, the command is
    /// not started yet), to write the kernel backstops; without cgroups there
    /// is no process to act on before the exec, and it is called just after.
    /// A failed start leaves nothing behind (no cgroup, no process).
    fn start(
        &mut self,
        def: &AgentDef,
        env: &[(String, String)],
        before_exec: &mut dyn FnMut(&mut dyn Actuator),
    ) -> Result<Started, String>;
    /// Take over an agent a previous governor started: its cgroup directories
    /// and leader pid, as stored.
    fn adopt(&mut self, dirs: &[PathBuf], pid: u32) -> Result<Started, String>;
    /// Take over a running process that allot did not start: with `move_it`,
    /// move it into a new cgroup for the agent (children it already forked
    /// stay where they are); else follow its tree through `/proc`.
    fn adopt_pid(&mut self, def: &AgentDef, pid: u32, move_it: bool) -> Result<Started, String>;
    /// Where an agent's cgroup directories will be, before it starts (none without cgroups).
    fn cgroup_dirs(&self, _group: &str, _agent: &str) -> Vec<PathBuf> {
        Vec::new()
    }
    /// The agent cgroup directories in allot's tree (`<root>/<group>/<agent>`,
    /// every hierarchy) that are not among `known`: left by an earlier run
    /// that no stored agent owns any more (none without cgroups).
    fn unknown_cgroups(&self, _known: &[PathBuf]) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Remove the group directories with no agent left in them; returns those removed.
    fn remove_empty_groups(&mut self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// The memory OOM counters of an agent's cgroup and of its group's cgroup
    /// (each `None` where there is none or it cannot be read): compared with
    /// a reading taken at its start, they tell an exit caused by the kernel's
    /// OOM killer, and whose limit it was.
    fn oom_counters(&self, _cgroup: Option<&AgentCgroup>, _group: &str) -> (Option<OomCounters>, Option<OomCounters>) {
        (None, None)
    }
    /// The cgroup directories of process `pid` (every hierarchy, read from
    /// its `/proc/<pid>/cgroup`); `None` without cgroups or when it cannot be read.
    fn cgroup_dirs_of_pid(&self, _pid: u32) -> Option<Vec<PathBuf>> {
        None
    }
    /// The descriptors one agent's kernel notifications hold, leased from
    /// the open-files budget (`Ok(None)` where there is no budget); the
    /// reason when none are left.
    fn notification_files(&self) -> Result<Option<FdLease>, String> {
        Ok(None)
    }
    /// An actuator on a group's cgroup, for group totals (`None` without cgroups).
    fn group_actuator(&mut self, group: &str) -> Option<Box<dyn Actuator>>;
    /// Remove what the backend created for an agent that is gone.
    fn cleanup(&mut self, cgroup: Option<&AgentCgroup>);
    /// Remove everything at shutdown.
    fn shutdown(&mut self);
}

/// A leader that is not our child: alive while `/proc/<pid>` shows a live
/// process with the start time it had when adopted.
struct AdoptedLeader {
    pid: u32,
    start: u64,
}

fn start_time(pid: u32) -> Option<(u8, u64)> {
    allot_sys::proc::stat(&Roots::host().proc, pid).map(|s| (s.state, s.starttime))
}

impl Leader for AdoptedLeader {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn try_wait(&mut self) -> Option<Exit> {
        match start_time(self.pid) {
            Some((state, start)) if start == self.start && state != b'Z' && state != b'X' => None,
            _ => Some(Exit::Unknown),
        }
    }
}

/// A leader allot started, with the descriptor it holds (the standard
/// library's pidfd of the child) leased from the budget.
struct ChildLeader {
    child: Child,
    _fd: Option<FdLease>,
}

impl Leader for ChildLeader {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn try_wait(&mut self) -> Option<Exit> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.code().map_or_else(|| Exit::Signal(st.signal().unwrap_or(0)), Exit::Code)),
            _ => None,
        }
    }
}

/// Whether user `uid`:`gid` can reach what the command names: its working
/// directory, the program when given as a path, and every argument that names
/// an existing file (a script, say). Checked from the permission bits (root
/// reaches everything); the error names the path and what to do.
fn user_can_reach(cwd: &std::path::Path, command: &[String], uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return Ok(());
    }
    let may = |m: &std::fs::Metadata, bit: u32| {
        let mode = m.mode();
        if m.uid() == uid {
            mode & (bit << 6) != 0
        } else if m.gid() == gid {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    };
    let check = |path: &std::path::Path, what: &str| -> Result<(), String> {
        for dir in path.ancestors().skip(1) {
            if let Ok(m) = std::fs::metadata(dir) {
                if !may(&m, 0o1) {
                    return Err(format!(
                        "it runs as uid {uid}, who cannot reach {what} {}: {} is not searchable for it; move the files, \
                         open the directory, or give a user who can (root only by name: user = \"root\")",
                        path.display(),
                        dir.display()
                    ));
                }
            }
        }
        Ok(())
    };
    check(&cwd.join("."), "its working directory")?;
    for (i, arg) in command.iter().enumerate() {
        if i == 0 && !arg.contains('/') {
            continue; // found through PATH
        }
        let path = cwd.join(arg);
        let Ok(m) = std::fs::metadata(&path) else { continue };
        check(&path, "the file")?;
        if m.is_file() && !may(&m, 0o4) && !(i == 0 && may(&m, 0o1)) {
            return Err(format!("it runs as uid {uid}, who cannot read {}", path.display()));
        }
    }
    Ok(())
}

/// Take out of `v` the items `pick` chooses.
fn extract<T>(v: &mut Vec<T>, pick: impl Fn(&T) -> bool) -> Vec<T> {
    let (out, keep): (Vec<T>, Vec<T>) = std::mem::take(v).into_iter().partition(|x| pick(x));
    *v = keep;
    out
}

/// The descriptors one agent's kernel notifications may hold (v1: two
/// memory-threshold eventfds and the usage file; the exit watch's pidfd).
const NOTIFICATION_FILES: usize = 4;

/// The real backend.
#[derive(Debug)]
pub struct RealBackend {
    root: Option<CgroupRoot>,
    /// The host's cgroup mounts (with allot's own place in them), when cgroups are in use.
    layout: Option<Layout>,
    why_not: Option<String>,
    groups: Vec<String>,
    proc_root: PathBuf,
    /// The descriptors probes may keep open, shared by them (given back as agents go).
    fds: allot_sys::probe::FdBudget,
    /// Removals of exited agents' cgroups, running on threads of their own, with the directories they remove.
    cleanups: Vec<(Vec<PathBuf>, std::thread::JoinHandle<()>)>,
    /// The exclusive lock on the cgroup root, held for the backend's life;
    /// its file is removed when the backend is dropped.
    lock: Option<LockFile>,
}

/// An exclusive `flock` on a lock file named after the cgroup root (in
/// `/run/allot` as root, else `$XDG_RUNTIME_DIR/allot` or the temp dir),
/// holding our pid; refused, naming the holder, when another allot has it.
/// The file is removed when the backend is dropped (a clean stop), safely
/// against a concurrent acquirer ([`allot_sys::lockfile`]).
fn lock_cgroup_root(root: &std::path::Path) -> Result<LockFile, String> {
    let dir = if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/allot")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from).join("allot")
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name: String = root.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    LockFile::acquire(&dir.join(format!("cgroup{name}.lock"))).map_err(|e| match e {
        LockError::Held { pid, .. } => format!(
            "the cgroup root {} is in use by another allot (pid {}): give this one its own --cgroup-name",
            root.display(),
            pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
        ),
        e @ LockError::Io { .. } => e.to_string(),
    })
}

impl RealBackend {
    /// Use cgroups beneath our own cgroup (named `name`) where possible; else
    /// fall back to `/proc` process trees and say why. Refused when another
    /// allot uses the same cgroup root: recovery stops whatever runs in the
    /// tree that its own store does not know, so two of them would stop each
    /// other's agents.
    pub fn new(name: &str, expected_agents: usize) -> Result<RealBackend, String> {
        let mut b = RealBackend::unlocked(name, expected_agents);
        if let Some(root) = &b.root {
            let first = root.dirs.all().first().map(|d| d.to_path_buf()).unwrap_or_default();
            b.lock = Some(lock_cgroup_root(&first)?);
        }
        Ok(b)
    }

    fn unlocked(name: &str, expected_agents: usize) -> RealBackend {
        let roots = Roots::host();
        let (root, why_not) = match Layout::discover(&roots)
            .map_err(|e| e.to_string())
            .and_then(|l| CgroupRoot::create(&l, &roots, name).map(|r| (r, l)).map_err(|e| e.to_string()))
        {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        let (root, layout) = root.unzip();
        RealBackend {
            root,
            layout,
            why_not,
            groups: Vec::new(),
            proc_root: Roots::host().proc,
            fds: allot_sys::probe::FdBudget::new(expected_agents, allot_sys::spawn::nofile_limit()),
            cleanups: Vec::new(),
            lock: None,
        }
    }

    /// Process trees through /proc only, with the reason given.
    pub fn without_cgroups(why: &str) -> RealBackend {
        RealBackend {
            root: None,
            layout: None,
            why_not: Some(why.to_owned()),
            groups: Vec::new(),
            proc_root: Roots::host().proc,
            fds: allot_sys::probe::FdBudget::new(0, allot_sys::spawn::nofile_limit()),
            cleanups: Vec::new(),
            lock: None,
        }
    }

    /// The cgroup root, if cgroups are in use.
    pub fn root(&self) -> Option<&CgroupRoot> {
        self.root.as_ref()
    }

    /// Why an agent gets no descriptor for `what`: the open-files limit is used up.
    fn no_descriptor_left(&self, what: &str) -> String {
        format!(
            "no file descriptor left for {what}: allot's open-files limit ({}) is used up by the agents it runs; \
             raise it (ulimit -n, or LimitNOFILE= in its unit)",
            allot_sys::spawn::nofile_limit()
        )
    }
}

impl Backend for RealBackend {
    fn mode(&self) -> String {
        match (&self.root, &self.why_not) {
            (Some(r), _) => format!("cgroups ({})", allot_sys::cgroup::tree::describe(&r.dirs)),
            (None, Some(why)) => format!("no cgroups ({why}): process trees through /proc, signals, duty-cycle throttling"),
            (None, None) => "no cgroups".into(),
        }
    }

    fn start(
        &mut self,
        def: &AgentDef,
        env: &[(String, String)],
        before_exec: &mut dyn FnMut(&mut dyn Actuator),
    ) -> Result<Started, String> {
        let (program, args) = def.command.split_first().ok_or("empty command")?;
        let mut cmd = Command::new(program);
        // The daemon's own log filter is not the agent's.
        cmd.args(args).stdin(Stdio::null()).env_remove("ALLOT_LOG").envs(def.env.iter()).envs(env.iter().map(|(k, v)| (k, v)));
        let cwd = match &def.workdir {
            Some(w) => {
                let meta = std::fs::metadata(w).map_err(|e| format!("workdir {}: {e}", w.display()))?;
                if !meta.is_dir() {
                    return Err(format!("workdir {} is not a directory", w.display()));
                }
                cmd.current_dir(w);
                std::path::absolute(w).unwrap_or_else(|_| w.clone())
            }
            None => std::env::current_dir().map_err(|e| format!("allot's working directory: {e}"))?,
        };
        if let Some((uid, gid)) = def.user {
            let (me, my_gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
            if (uid, gid) != (me, my_gid) {
                if me != 0 {
                    return Err(format!("cannot run it as uid {uid}: allot runs as uid {me}, not root"));
                }
                user_can_reach(&cwd, &def.command, uid, gid)?;
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
        }
        let id = def.spec.id.as_str();
        let cannot_run = |e: allot_sys::SysError| format!("cannot run {program:?}: {e}");
        let leader_fd = Some(self.fds.lease_leader().ok_or_else(|| self.no_descriptor_left("its leader"))?);
        match &self.root {
            Some(root) => {
                // An earlier agent of this name may still be being removed: its removal would take the new cgroup away.
                let paths = root.agent_paths(&def.spec.group, id);
                for (_, h) in extract(&mut self.cleanups, |(dirs, _)| dirs.iter().any(|d| paths.contains(d))) {
                    let _ = h.join();
                }
                let cg = root.agent(&def.spec.group, id).map_err(|e| e.to_string())?;
                if !self.groups.contains(&def.spec.group) {
                    self.groups.push(def.spec.group.clone());
                }
                let mut actuator = CgroupActuator::new(cg.clone());
                // The kernel limits are in place before the first instruction of the agent.
                before_exec(&mut actuator);
                let started =
                    allot_sys::spawn::spawn(&mut cmd, Some(&cg)).map_err(cannot_run).and_then(|child| {
                        match CgroupProbe::within(cg.clone(), self.proc_root.clone(), &self.fds) {
                            Ok(probe) => Ok((child, probe)),
                            Err(e) => Err(format!("cannot measure its cgroup: {e}")),
                        }
                    });
                let (child, probe) = match started {
                    Ok(s) => s,
                    Err(e) => {
                        // Nothing of a failed start stays behind: whatever runs in the cgroup, and the cgroup.
                        if let Err(c) = cg.kill_and_remove(allot_sys::actuate::SETTLE_TIMEOUT) {
                            tracing::warn!(agent = id, error = %c, "cleanup after a failed start");
                        }
                        return Err(e);
                    }
                };
                Ok(Started {
                    leader: Box::new(ChildLeader { child, _fd: leader_fd }),
                    probe: Box::new(probe),
                    actuator: Box::new(actuator),
                    cgroup: Some(cg),
                })
            }
            None => {
                let child = allot_sys::spawn::spawn(&mut cmd, None).map_err(cannot_run)?;
                let pid = child.id();
                let mut actuator = TreeActuator::new(self.proc_root.clone(), pid);
                before_exec(&mut actuator);
                Ok(Started {
                    leader: Box::new(ChildLeader { child, _fd: leader_fd }),
                    probe: Box::new(TreeProbe::new(self.proc_root.clone(), pid)),
                    actuator: Box::new(actuator),
                    cgroup: None,
                })
            }
        }
    }

    fn adopt(&mut self, dirs: &[PathBuf], pid: u32) -> Result<Started, String> {
        let layout = Layout::discover(&Roots::host()).map_err(|e| e.to_string())?;
        let mut d = allot_sys::cgroup::tree::Dirs::default();
        for dir in dirs {
            let mount = layout.mounts.iter().filter(|m| dir.starts_with(&m.mount_point)).max_by_key(|m| m.mount_point.as_os_str().len());
            match mount {
                Some(m) if m.version == allot_sys::cgroup::Version::V2 => {
                    d.v2 = Some(dir.clone());
                    d.v2_controllers = allot_sys::cgroup::v2::core::controllers(dir).unwrap_or_default();
                }
                Some(m) => {
                    for c in allot_sys::cgroup::tree::V1::ALL {
                        if m.controllers.iter().any(|x| x == c.name()) {
                            d.v1.insert(c, dir.clone());
                        }
                    }
                }
                None => return Err(format!("{} is not on a cgroup mount", dir.display())),
            }
        }
        let cg = AgentCgroup { dirs: d };
        let live = cg.pids().map_err(|e| e.to_string())?;
        if !live.contains(&pid) {
            return Err(format!("pid {pid} is no longer in its cgroup"));
        }
        let (_, start) = start_time(pid).ok_or_else(|| format!("pid {pid} is gone"))?;
        let probe = CgroupProbe::within(cg.clone(), self.proc_root.clone(), &self.fds).map_err(|e| e.to_string())?;
        Ok(Started {
            leader: Box::new(AdoptedLeader { pid, start }),
            probe: Box::new(probe),
            actuator: Box::new(CgroupActuator::new(cg.clone())),
            cgroup: Some(cg),
        })
    }

    fn adopt_pid(&mut self, def: &AgentDef, pid: u32, move_it: bool) -> Result<Started, String> {
        let (_, start) = start_time(pid).ok_or_else(|| format!("no process {pid}"))?;
        let leader = Box::new(AdoptedLeader { pid, start });
        match (&self.root, move_it) {
            (Some(root), true) => {
                let cg = root.agent(&def.spec.group, def.spec.id.as_str()).map_err(|e| e.to_string())?;
                if !self.groups.contains(&def.spec.group) {
                    self.groups.push(def.spec.group.clone());
                }
                allot_sys::spawn::adopt(pid, &cg).map_err(|e| e.to_string())?;
                let probe = CgroupProbe::within(cg.clone(), self.proc_root.clone(), &self.fds).map_err(|e| e.to_string())?;
                Ok(Started { leader, probe: Box::new(probe), actuator: Box::new(CgroupActuator::new(cg.clone())), cgroup: Some(cg) })
            }
            (None, true) => Err(format!("cannot move {pid}: no cgroups here ({})", self.mode())),
            (_, false) => Ok(Started {
                leader,
                probe: Box::new(TreeProbe::new(self.proc_root.clone(), pid)),
                actuator: Box::new(TreeActuator::new(self.proc_root.clone(), pid)),
                cgroup: None,
            }),
        }
    }

    fn cgroup_dirs(&self, group: &str, agent: &str) -> Vec<PathBuf> {
        self.root.as_ref().map(|r| r.agent_paths(group, agent)).unwrap_or_default()
    }

    fn unknown_cgroups(&self, known: &[PathBuf]) -> Vec<PathBuf> {
        self.root.as_ref().map(|r| r.agent_dirs().into_iter().filter(|d| !known.contains(d)).collect()).unwrap_or_default()
    }

    fn remove_empty_groups(&mut self) -> Vec<PathBuf> {
        self.root.as_ref().map(CgroupRoot::remove_empty_groups).unwrap_or_default()
    }

    fn oom_counters(&self, cgroup: Option<&AgentCgroup>, group: &str) -> (Option<OomCounters>, Option<OomCounters>) {
        let read = |d: &allot_sys::cgroup::tree::Dirs| d.oom_counters().and_then(Result::ok);
        let agent = cgroup.and_then(|c| read(&c.dirs));
        let group = self.root.as_ref().and_then(|r| read(&r.group_dirs(group)));
        (agent, group)
    }

    fn group_actuator(&mut self, group: &str) -> Option<Box<dyn Actuator>> {
        let dirs = self.root.as_ref()?.group(group).ok()?;
        Some(Box::new(CgroupActuator::new(AgentCgroup { dirs })))
    }

    fn notification_files(&self) -> Result<Option<FdLease>, String> {
        self.fds.lease(NOTIFICATION_FILES).map(Some).ok_or_else(|| self.no_descriptor_left("its kernel notifications"))
    }

    fn cgroup_dirs_of_pid(&self, pid: u32) -> Option<Vec<PathBuf>> {
        self.layout.as_ref()?.of_pid(&self.proc_root, pid).ok().map(|l| l.dirs())
    }

    fn cleanup(&mut self, cgroup: Option<&AgentCgroup>) {
        // Kill what is left and remove the directories on a thread of their own: never on the loop.
        self.cleanups.retain(|(_, h)| !h.is_finished());
        if let Some(cg) = cgroup.cloned() {
            let dirs: Vec<PathBuf> = cg.dirs.all().into_iter().map(std::path::Path::to_path_buf).collect();
            self.cleanups.push((
                dirs,
                std::thread::spawn(move || {
                    if let Err(e) = cg.kill_and_remove(allot_sys::actuate::SETTLE_TIMEOUT) {
                        tracing::warn!(error = %e, "cleanup of an exited agent's cgroup");
                    }
                }),
            ));
        }
    }

    fn shutdown(&mut self) {
        for (_, h) in self.cleanups.drain(..) {
            let _ = h.join();
        }
        if let Some(root) = &self.root {
            for g in &self.groups {
                if let Ok(d) = root.group(g) {
                    let _ = d.remove();
                }
            }
            let _ = root.remove();
        }
    }
}
