//! allot's own cgroup hierarchy: `allot/<group>/<agent>` beneath the cgroup
//! allot runs in, in every v1 hierarchy it uses and in the unified one.
//!
//! allot only writes to directories it created here. In v2 it enables for
//! its children only the controllers its own cgroup already delegates
//! (`cgroup.controllers` of the new directory); it never writes its own
//! cgroup's `cgroup.subtree_control`.

use super::fs::Written;
use super::{Layout, v2};
use crate::Roots;
use crate::actuate::{CgroupKill, Outcome, SettleStep, poll_until};
use crate::error::SysError;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The v1 controllers allot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum V1 {
    /// memory
    Memory,
    /// cpu
    Cpu,
    /// cpuacct
    Cpuacct,
    /// pids
    Pids,
    /// freezer
    Freezer,
    /// blkio
    Blkio,
}

impl V1 {
    /// All of them.
    pub const ALL: [V1; 6] = [V1::Memory, V1::Cpu, V1::Cpuacct, V1::Pids, V1::Freezer, V1::Blkio];

    /// The controller's name.
    pub fn name(self) -> &'static str {
        match self {
            V1::Memory => "memory",
            V1::Cpu => "cpu",
            V1::Cpuacct => "cpuacct",
            V1::Pids => "pids",
            V1::Freezer => "freezer",
            V1::Blkio => "blkio",
        }
    }
}

/// A cgroup's directories: one per v1 controller in use, and the unified one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirs {
    /// v1 directories, by controller (two controllers may share a directory).
    pub v1: BTreeMap<V1, PathBuf>,
    /// The unified-hierarchy directory.
    pub v2: Option<PathBuf>,
    /// Controllers enabled for this cgroup in the unified hierarchy.
    pub v2_controllers: Vec<String>,
}

impl Dirs {
    /// Every distinct directory, v2 first.
    pub fn all(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.v2.iter().map(PathBuf::as_path).collect();
        for d in self.v1.values() {
            // Compared as bytes: `Path`'s equality walks components (about 100 ns each time).
            if !out.iter().any(|o| o.as_os_str() == d.as_os_str()) {
                out.push(d);
            }
        }
        out
    }

    /// The first of [`Dirs::all`] (v2 if present, else the first v1 one), without building the list.
    pub fn first(&self) -> Option<&Path> {
        self.v2.as_deref().or_else(|| self.v1.values().next().map(PathBuf::as_path))
    }

    /// Whether the unified hierarchy has `controller` enabled here.
    pub fn v2_has(&self, controller: &str) -> bool {
        self.v2.is_some() && self.v2_controllers.iter().any(|c| c == controller)
    }

    /// The memory OOM counters of this cgroup: v2 when the unified hierarchy
    /// has the memory controller here, else v1 memory; `None` without either.
    pub fn oom_counters(&self) -> Option<Result<super::OomCounters, SysError>> {
        match (&self.v2, self.v1.get(&V1::Memory)) {
            (Some(d), _) if self.v2_has("memory") => Some(v2::memory::oom_counters(d)),
            (_, Some(d)) => Some(super::v1::memory::oom_counters(d)),
            _ => None,
        }
    }

    fn child(&self, name: &str) -> Dirs {
        Dirs {
            v1: self.v1.iter().map(|(c, d)| (*c, d.join(name))).collect(),
            v2: self.v2.as_ref().map(|d| d.join(name)),
            v2_controllers: self.v2_controllers.clone(),
        }
    }

    /// Create every directory (existing ones are kept: allot made them earlier),
    /// and in v2 enable the available controllers for the children.
    fn create(&mut self, delegate: bool) -> Result<Vec<Written>, SysError> {
        for d in self.all() {
            dir_change(d, std::fs::create_dir(d), ErrorKind::AlreadyExists, "(mkdir)")?;
        }
        let mut written = Vec::new();
        if let Some(d) = &self.v2 {
            self.v2_controllers = v2::core::controllers(d)?;
            if delegate {
                written.extend(v2::core::enable(d, &self.v2_controllers)?);
            }
        }
        Ok(written)
    }

    /// Remove every directory; directories already gone are fine. Fails
    /// (EBUSY) while processes remain.
    pub fn remove(&self) -> Result<(), SysError> {
        for d in self.all() {
            dir_change(d, std::fs::remove_dir(d), ErrorKind::NotFound, "(rmdir)")?;
        }
        Ok(())
    }
}

/// The result of creating or removing the directory `d` (`what`: "(mkdir)" or
/// "(rmdir)"); failing with the kind `already` means it already is as wanted.
fn dir_change(d: &Path, result: std::io::Result<()>, already: ErrorKind, what: &str) -> Result<(), SysError> {
    match result {
        Err(e) if e.kind() != already => Err(SysError::Write { path: d.to_path_buf(), value: what.into(), source: e }),
        _ => Ok(()),
    }
}

/// allot's root cgroup: `<own cgroup>/<name>` in each hierarchy.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    /// The root's directories.
    pub dirs: Dirs,
}

/// Which hierarchies are in use, for messages.
pub fn describe(d: &Dirs) -> String {
    let mut parts: Vec<String> = d.v1.keys().map(|c| format!("v1 {}", c.name())).collect();
    if d.v2.is_some() {
        let c = if d.v2_controllers.is_empty() { "core only".to_owned() } else { d.v2_controllers.join(" ") };
        parts.push(format!("v2 ({c})"));
    }
    parts.join(", ")
}

impl CgroupRoot {
    /// Create (or reuse) `name` beneath allot's own cgroup in every hierarchy
    /// found. Fails with the path when a directory cannot be made (no
    /// permission, no delegation).
    pub fn create(layout: &Layout, roots: &Roots, name: &str) -> Result<CgroupRoot, SysError> {
        let mut dirs = Dirs::default();
        for c in V1::ALL {
            if let Some(own) = layout.v1_dir(c.name()) {
                dirs.v1.insert(c, roots.path(&own).join(name));
            }
        }
        if let Some(own) = layout.v2_dir() {
            dirs.v2 = Some(roots.path(&own).join(name));
        }
        if dirs.all().is_empty() {
            return Err(SysError::Parse { path: roots.proc.join("self/mountinfo"), problem: "no cgroup hierarchy is mounted".into() });
        }
        dirs.create(true)?;
        Ok(CgroupRoot { dirs })
    }

    /// The directories of a group (created if missing).
    pub fn group(&self, group: &str) -> Result<Dirs, SysError> {
        let mut d = self.dirs.child(group);
        d.create(true)?;
        Ok(d)
    }

    /// A group's directories, creating nothing.
    pub fn group_dirs(&self, group: &str) -> Dirs {
        self.dirs.child(group)
    }

    /// Where an agent's cgroup directories are (or will be), creating nothing.
    pub fn agent_paths(&self, group: &str, agent: &str) -> Vec<PathBuf> {
        self.dirs.child(group).child(agent).all().into_iter().map(Path::to_path_buf).collect()
    }

    /// The cgroup of an agent in a group (both created if missing).
    pub fn agent(&self, group: &str, agent: &str) -> Result<AgentCgroup, SysError> {
        let g = self.group(group)?;
        let mut dirs = g.child(agent);
        dirs.create(false)?;
        Ok(AgentCgroup { dirs })
    }

    /// Remove the root (its groups and agents must be gone).
    pub fn remove(&self) -> Result<(), SysError> {
        self.dirs.remove()
    }

    /// Every agent directory beneath the root, `<root>/<group>/<agent>`, in
    /// every hierarchy (a directory that cannot be read is skipped), sorted.
    pub fn agent_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.dirs.all().into_iter().flat_map(subdirs).flat_map(|g| subdirs(&g)).collect();
        out.sort();
        out
    }

    /// Remove the group directories that hold no agent directory (a group
    /// with agents stays: `rmdir` refuses a cgroup with children). Returns
    /// those removed.
    pub fn remove_empty_groups(&self) -> Vec<PathBuf> {
        self.dirs.all().into_iter().flat_map(subdirs).filter(|g| subdirs(g).is_empty() && std::fs::remove_dir(g).is_ok()).collect()
    }
}

/// The child cgroups of a cgroup directory (its subdirectories); none if it cannot be read.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// One agent's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCgroup {
    /// Its directories.
    pub dirs: Dirs,
}

impl AgentCgroup {
    /// Every `cgroup.procs` file a new process must be written to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.all().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The pids in the cgroup, read from the directory that sees all of them
    /// (v2 if present, else the first v1 one).
    pub fn pids(&self) -> Result<Vec<u32>, SysError> {
        let dir =
            self.dirs.first().ok_or_else(|| SysError::Parse { path: PathBuf::new(), problem: "agent cgroup has no directories".into() })?;
        super::fs::procs(dir)
    }

    /// The v1 directory of a controller, if used.
    pub fn v1(&self, c: V1) -> Option<&Path> {
        self.dirs.v1.get(&c).map(PathBuf::as_path)
    }

    /// The v2 directory, if any.
    pub fn v2(&self) -> Option<&Path> {
        self.dirs.v2.as_deref()
    }

    /// Remove the agent's directories (after its processes are gone).
    pub fn remove(&self) -> Result<(), SysError> {
        self.dirs.remove()
    }

    /// Kill every process in the cgroup's directories the way the actuator
    /// does (`cgroup.kill`, else v1 freeze/kill/thaw rounds, else signals),
    /// wait until they are empty, then remove every directory. Blocking;
    /// [`SysError::Timeout`] if processes remain after `timeout`.
    pub fn kill_and_remove(&self, timeout: Duration) -> Result<Outcome, SysError> {
        let dirs: Vec<PathBuf> = self.dirs.all().into_iter().map(PathBuf::from).collect();
        kill_and_remove_dirs(&dirs, timeout).map(|(out, _)| out)
    }
}

/// [`AgentCgroup::kill_and_remove`] on plain directory paths (such as those
/// stored for an agent of an earlier run): `cgroup.kill` where a directory
/// has it, else the v1 freezer where one has `freezer.state`, else signals.
/// Directories already gone are fine. Returns what was done and every pid
/// seen in the directories while killing them. Blocking.
pub fn kill_and_remove_dirs(dirs: &[PathBuf], timeout: Duration) -> Result<(Outcome, Vec<u32>), SysError> {
    let mut out = Outcome::default();
    let mut kill = CgroupKill::start(dirs.to_vec(), &mut out)?;
    let mut removed = 0;
    poll_until("kill and remove", timeout, || match kill.step(&mut out)? {
        SettleStep::Done => remove_dirs(dirs, &mut removed),
        pending => Ok(pending),
    })?;
    out.detail = format!("{}; {removed} cgroup directories removed", out.detail);
    Ok((out, kill.seen()))
}

/// Remove the directories; pending while one is still busy (EBUSY).
fn remove_dirs(dirs: &[PathBuf], removed: &mut usize) -> Result<SettleStep, SysError> {
    for d in dirs {
        match std::fs::remove_dir(d) {
            Ok(()) => *removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                return Ok(SettleStep::Pending(format!("{} is still busy", d.display())));
            }
            Err(source) => return Err(SysError::Write { path: d.clone(), value: "(rmdir)".into(), source }),
        }
    }
    Ok(SettleStep::Done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn agent_dirs_and_empty_groups_on_a_temp_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (mem, pids) = (tmp.path().join("memory/allot"), tmp.path().join("pids/allot"));
        let root =
            CgroupRoot { dirs: Dirs { v1: BTreeMap::from([(V1::Memory, mem.clone()), (V1::Pids, pids.clone())]), ..Dirs::default() } };
        for d in [mem.join("g/a"), mem.join("g/b"), pids.join("g/a"), mem.join("empty")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(mem.join("g/cgroup.procs"), "").unwrap();
        assert_eq!(root.agent_dirs(), [mem.join("g/a"), mem.join("g/b"), pids.join("g/a")]);
        assert_eq!(root.remove_empty_groups(), [mem.join("empty")]);
        assert!(mem.join("g").exists() && !mem.join("empty").exists());
    }
}
