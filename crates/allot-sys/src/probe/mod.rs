//! Probes: what an agent uses right now, for every resource of SPEC section 2.
//!
//! Hot counters (memory, cpu time, processes, threads) come from files kept
//! open and re-read with `pread` at offset 0 into a buffer: no open/close per
//! sample. `processes` counts processes (thread groups: the distinct pids of
//! `cgroup.procs`, or the processes of the tree) and `threads` counts tasks
//! (`pids.current`, what the kernel's `pids.max` limits; else the tasks
//! listed by the cgroup, or the threads of the tree's processes). Slow-moving counters (open files, sockets, block
//! I/O, network) are read at a longer cadence by [`Probe::slow`], and the
//! inactive file cache that the memory figure excludes only when
//! [`Probe::refresh_working_set`] is called (see `allot_core::working_set`). Without a cgroup the same numbers
//! are summed over the process tree found through `/proc`.

mod cgroup;
mod disk;
mod fd_budget;
mod tree;

pub use cgroup::CgroupProbe;
pub use disk::{DiskWalk, disk_usage};
pub use fd_budget::{FILES_PER_AGENT, FdBudget, FdLease, HOT_FILES_PER_AGENT, KeepOpen, OTHER_FILES_PER_AGENT};
pub use tree::TreeProbe;

use crate::error::SysError;
use crate::proc::{fds, parse};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file re-read from offset 0: kept open (a `pread` per read), or, where
/// the open-files limit leaves no room for it, opened for each read.
#[derive(Debug)]
pub struct HotFile {
    file: Option<File>,
    path: PathBuf,
}

impl HotFile {
    /// Open `path` for reading, and keep it open.
    pub fn open(path: PathBuf) -> Result<Self, SysError> {
        let file = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
        Ok(HotFile { file: Some(file), path })
    }

    /// `path`, kept open when `keep`; else checked readable now and opened at each read.
    pub fn new(path: PathBuf, keep: bool) -> Result<Self, SysError> {
        let mut f = HotFile::open(path)?;
        if !keep {
            f.file = None;
        }
        Ok(f)
    }

    /// Whether the file is kept open.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Run `read` on the open file: the kept one, or one opened for it.
    pub(crate) fn with_file<R>(&self, read: impl FnOnce(&File, &Path) -> Result<R, SysError>) -> Result<R, SysError> {
        match &self.file {
            Some(f) => read(f, &self.path),
            None => {
                let f = File::open(&self.path).map_err(|source| SysError::Read { path: self.path.clone(), source })?;
                read(&f, &self.path)
            }
        }
    }

    /// Read the whole file (up to the buffer's size) into `buf`.
    pub fn read<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], SysError> {
        let n = self.with_file(|f, path| {
            rustix::io::pread(f, &mut *buf, 0).map_err(|e| SysError::Read { path: path.to_path_buf(), source: e.into() })
        })?;
        Ok(&buf[..n])
    }

    /// Read the file as one number.
    pub fn read_u64(&self) -> Result<u64, SysError> {
        let mut buf = [0u8; 32];
        let bytes = self.read(&mut buf)?;
        parse_u64(bytes).ok_or_else(|| SysError::Parse {
            path: self.path.clone(),
            problem: format!("expected a number, got {:?}", String::from_utf8_lossy(bytes)),
        })
    }

    /// The path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let t = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |n, &b| if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None })
}

/// The fast counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fast {
    /// Bytes in use: the working set, `memory_raw` less the inactive file
    /// cache as of the last [`Probe::refresh_working_set`].
    pub memory: u64,
    /// Bytes in use as the cgroup counts them (page cache included), read now.
    pub memory_raw: u64,
    /// CPU time used so far, in nanoseconds (cumulative).
    pub cpu_ns: u64,
    /// Processes (thread groups in the cgroup, or processes of the tree).
    pub processes: u64,
    /// Threads (tasks in the cgroup, as `pids.current` counts them, or threads of the tree's processes).
    pub threads: u64,
}

/// A measurement that may be unsupported for this agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A value.
    Value(u64),
    /// Not measurable in this setup (never reported as 0).
    Unsupported,
}

/// Where the block I/O figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFrom {
    /// v1 `blkio.throttle.io_service_bytes`.
    Blkio,
    /// v2 `io.stat`.
    IoStat,
    /// `read_bytes + write_bytes` of `/proc/<pid>/io` summed over the agent's
    /// processes (bytes the processes caused to be read from or written to
    /// storage; what exited processes did is not counted): without an I/O
    /// controller, and on hosts whose cgroup counters stay 0 (a v1 blkio
    /// whose throttle counters see no I/O) until they first move.
    Proc,
}

impl IoFrom {
    /// The name shown to users (`blkio`, `io.stat`, `proc`).
    pub fn name(self) -> &'static str {
        match self {
            IoFrom::Blkio => "blkio",
            IoFrom::IoStat => "io.stat",
            IoFrom::Proc => "proc",
        }
    }
}

/// The slow counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slow {
    /// Open file descriptors over the tree.
    pub files: u64,
    /// Block I/O bytes so far (cumulative), from `io_from`.
    pub io_bytes: u64,
    /// Where `io_bytes` comes from (a change of source restarts the counter).
    pub io_from: IoFrom,
    /// Network bytes so far (cumulative), when the agent has its own network namespace.
    pub network_bytes: Measure,
}

/// Measures one agent.
pub trait Probe: Send {
    /// Memory, cpu time, processes.
    fn fast(&mut self) -> Result<Fast, SysError>;
    /// Files, I/O, network.
    fn slow(&mut self) -> Result<Slow, SysError>;
    /// Read the inactive file cache afresh (v1/v2 `memory.stat`, the
    /// dearest read of a sample), which [`Fast::memory`] subtracts from the
    /// raw usage from then on; the bytes read, or `None` where the memory
    /// figure has no such part (a process tree's resident memory).
    /// `allot_core::working_set` says when a decision needs it.
    fn refresh_working_set(&mut self) -> Result<Option<u64>, SysError> {
        Ok(None)
    }
    /// Open sockets over the tree (a readlink per descriptor: the slowest cadence).
    fn connections(&mut self) -> Result<u64, SysError> {
        Ok(self.pids()?.iter().filter_map(|p| fds::sockets(self.proc_root(), *p)).sum())
    }
    /// The procfs root the probe reads.
    fn proc_root(&self) -> &Path;
    /// The agent's processes.
    fn pids(&self) -> Result<Vec<u32>, SysError>;
}

fn netns(proc_root: &Path, pid: &str) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid).join("ns/net")).ok().map(|m| m.ino())
}

/// Network bytes of the agent's namespace, if it has its own.
fn network(proc_root: &Path, own: Option<u64>, pids: &[u32]) -> Measure {
    let Some(&first) = pids.first() else {
        return Measure::Unsupported;
    };
    let theirs = netns(proc_root, &first.to_string());
    if theirs.is_none() || theirs == own {
        return Measure::Unsupported;
    }
    std::fs::read_to_string(proc_root.join(first.to_string()).join("net/dev"))
        .ok()
        .and_then(|t| parse::net_dev_bytes(&t))
        .map_or(Measure::Unsupported, Measure::Value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_files_and_disk_usage_on_a_temp_tree() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("pids.current"), "7\n").unwrap();
        let f = HotFile::open(t.path().join("pids.current")).unwrap();
        assert_eq!(f.read_u64().unwrap(), 7);
        std::fs::write(t.path().join("pids.current"), "12\n").unwrap();
        assert_eq!(f.read_u64().unwrap(), 12, "re-read at offset 0");
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join("sub/data"), vec![1u8; 100_000]).unwrap();
        let used = disk_usage(t.path()).unwrap();
        assert!(used >= 100_000, "{used}");
    }
}
