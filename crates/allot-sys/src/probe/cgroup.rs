//! `CgroupProbe`: an agent's usage from its cgroup files (hot files kept open,
//! slow counters at their own cadence).

use super::fd_budget::{FdBudget, KeepOpen, Lease, PROCS_KEPT};
use super::{Fast, HotFile, IoFrom, Measure, Probe, Slow, netns, network, parse_u64};
use crate::cgroup::tree::{AgentCgroup, V1};
use crate::cgroup::{fs, v1, v2};
use crate::error::SysError;
use crate::proc::{fds, parse};
use std::fs::File;
use std::path::{Path, PathBuf};

/// `usage_usec N` out of `cpu.stat` bytes.
fn usage_usec(bytes: &[u8]) -> Option<u64> {
    bytes.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"usage_usec ").and_then(parse_u64))
}

#[derive(Debug)]
enum MemSource {
    V1 { usage: HotFile, dir: PathBuf },
    V2 { current: HotFile, dir: PathBuf },
}

#[derive(Debug)]
enum CpuSource {
    Cpuacct(HotFile),
    CpuStat(HotFile),
}

#[derive(Debug)]
enum IoSource {
    Blkio(PathBuf),
    IoStat(PathBuf),
    Procs,
}

/// A process's `/proc/<pid>/fd` directory and `io` file, kept open. Both
/// refer to that process: once it has exited they fail (ESRCH, ENOENT), also
/// when its pid is reused, and are dropped.
#[derive(Debug)]
struct ProcFiles {
    pid: u32,
    fd_dir: std::os::fd::OwnedFd,
    io: HotFile,
}

/// A probe reading an agent's cgroup files.
#[derive(Debug)]
pub struct CgroupProbe {
    cg: AgentCgroup,
    proc_root: PathBuf,
    mem: Option<MemSource>,
    inactive_file: u64,
    cpu: Option<CpuSource>,
    pids: Option<HotFile>,
    io: IoSource,
    own_netns: Option<u64>,
    pids_buf: Vec<u32>,
    /// `cgroup.procs` bytes, grown to fit (the fast path re-reads it every sample).
    procs_bytes: Vec<u8>,
    path_buf: String,
    /// `cgroup.procs` and the io file kept open too, when the caller's fd budget allows.
    slow_files: Option<(HotFile, Option<HotFile>)>,
    /// The network namespace of the agent's first process, cached per pid.
    netns_cache: Option<(u32, Option<u64>)>,
    /// The cgroup's I/O counter has moved: it is the source from then on.
    cgroup_io_moved: bool,
    /// The directory whose `cgroup.procs` lists the agent's processes (the first of its hierarchies).
    procs_dir: PathBuf,
    /// `memory.stat`, kept open with the slow files.
    stat_file: Option<HotFile>,
    /// `memory.stat` bytes, grown to fit.
    stat_bytes: Vec<u8>,
    /// The first [`PROCS_KEPT`] processes' files, with `keep_slow_open`.
    proc_files: Vec<ProcFiles>,
    /// The descriptors it holds of a shared budget, if it was made within one.
    lease: Option<Lease>,
}

/// Open `/proc/<pid>/fd` and `/proc/<pid>/io` to keep; `None` when the process is gone or unreadable.
fn open_proc_files(proc_root: &Path, pid: u32) -> Option<ProcFiles> {
    use rustix::fs::{Mode, OFlags, open};
    let dir = proc_root.join(pid.to_string());
    let fd_dir = open(dir.join("fd"), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let io = HotFile::open(dir.join("io")).ok()?;
    Some(ProcFiles { pid, fd_dir, io })
}

/// Read a small file into `buf` with open/read/close and no allocation.
fn small_read<'b>(path: &Path, buf: &'b mut [u8]) -> Result<&'b [u8], SysError> {
    let fd = rustix::fs::open(path, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
        .map_err(|e| SysError::Read { path: path.to_path_buf(), source: e.into() })?;
    let mut n = 0;
    while n < buf.len() {
        let got = rustix::io::read(&fd, &mut buf[n..]).map_err(|e| SysError::Read { path: path.to_path_buf(), source: e.into() })?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(&buf[..n])
}

/// Read the whole of `file` (from offset 0) into `out`, growing it as needed.
fn read_whole(file: &File, path: &Path, out: &mut Vec<u8>) -> Result<(), SysError> {
    if out.len() < 4096 {
        out.resize(4096, 0);
    }
    let mut n = 0;
    loop {
        if n == out.len() {
            out.resize(out.len() * 2, 0);
        }
        let want = out.len() - n;
        let got =
            rustix::io::pread(file, &mut out[n..], n as u64).map_err(|e| SysError::Read { path: path.to_path_buf(), source: e.into() })?;
        n += got;
        // A cgroup file is a seq_file, which fills a read unless it is at its end: a short
        // read is the end (no second pread, which on cgroup.procs walks the tasks again).
        if got < want {
            break;
        }
    }
    out.truncate(n);
    Ok(())
}

/// The number after `key` (`"inactive_file "`) at the start of a line of `bytes`.
fn keyed_u64(bytes: &[u8], key: &[u8]) -> Option<u64> {
    bytes.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(key).and_then(parse_u64))
}

/// How many lines of `bytes` are numbers (tasks listed in a `tasks` or `cgroup.threads` file).
fn count_ids(bytes: &[u8]) -> u64 {
    bytes.split(|&b| b == b'\n').filter(|l| parse_u64(l).is_some()).count() as u64
}

/// Parse `cgroup.procs` bytes into `out` (cleared first).
fn parse_pids(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.extend(bytes.split(|&b| b == b'\n').filter_map(|l| parse_u64(l).and_then(|v| u32::try_from(v).ok())));
}

impl CgroupProbe {
    /// Open the hot files of `cg`: three kept open per agent (memory, cpu,
    /// pids). With `keep_slow_open`, `cgroup.procs`, the block-I/O file and
    /// `memory.stat` stay open too (six per agent, [`FILES_PER_AGENT`]): opening a cgroup file costs about
    /// 5 us here against 1 us for a `pread`, so keep them open while the
    /// open-files limit allows.
    pub fn new(cg: AgentCgroup, proc_root: PathBuf, keep_slow_open: bool) -> Result<Self, SysError> {
        CgroupProbe::keeping(cg, proc_root, if keep_slow_open { KeepOpen::All } else { KeepOpen::Hot })
    }

    /// A probe keeping what `budget` leaves it open; the descriptors go back when it is dropped.
    pub fn within(cg: AgentCgroup, proc_root: PathBuf, budget: &FdBudget) -> Result<Self, SysError> {
        let (keep, lease) = budget.take();
        let mut probe = CgroupProbe::keeping(cg, proc_root, keep)?;
        probe.lease = Some(lease);
        Ok(probe)
    }

    /// Which of its files this probe keeps open.
    pub fn keeps(&self) -> KeepOpen {
        if self.slow_files.is_some() {
            KeepOpen::All
        } else if self.open_files() > 0 {
            KeepOpen::Hot
        } else {
            KeepOpen::None
        }
    }

    /// A probe keeping `keep` of its files open (see [`KeepOpen::for_budget`]).
    pub fn keeping(cg: AgentCgroup, proc_root: PathBuf, keep: KeepOpen) -> Result<Self, SysError> {
        let hot = keep != KeepOpen::None;
        let keep_slow_open = keep == KeepOpen::All;
        let mem = if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("memory")) {
            Some(MemSource::V2 { current: HotFile::new(d.join("memory.current"), hot)?, dir: d.to_path_buf() })
        } else if let Some(d) = cg.v1(V1::Memory) {
            Some(MemSource::V1 { usage: HotFile::new(d.join("memory.usage_in_bytes"), hot)?, dir: d.to_path_buf() })
        } else {
            None
        };
        // v2 cpu.stat when the v2 cpu controller is in use or there is no
        // cpuacct; on hybrid hosts cpuacct.usage is cheaper to generate.
        let v2_cpu = cg.v2().filter(|d| fs::has(d, "cpu.stat"));
        let cpu = match (v2_cpu, cg.v1(V1::Cpuacct)) {
            (Some(d), _) if cg.dirs.v2_has("cpu") => Some(CpuSource::CpuStat(HotFile::new(d.join("cpu.stat"), hot)?)),
            (_, Some(d)) => Some(CpuSource::Cpuacct(HotFile::new(d.join("cpuacct.usage"), hot)?)),
            (Some(d), None) => Some(CpuSource::CpuStat(HotFile::new(d.join("cpu.stat"), hot)?)),
            (None, None) => None,
        };
        let pids_dir = if cg.dirs.v2_has("pids") { cg.v2() } else { cg.v1(V1::Pids) };
        let pids = pids_dir.map(|d| HotFile::new(d.join("pids.current"), hot)).transpose()?;
        let io = if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("io")) {
            IoSource::IoStat(d.to_path_buf())
        } else if let Some(d) = cg.v1(V1::Blkio) {
            IoSource::Blkio(d.to_path_buf())
        } else {
            IoSource::Procs
        };
        let own_netns = netns(&proc_root, "self");
        let procs_dir = cg.dirs.all().into_iter().next().map(Path::to_path_buf).unwrap_or_default();
        CgroupProbe {
            cg,
            proc_root,
            mem,
            inactive_file: 0,
            cpu,
            pids,
            io,
            own_netns,
            pids_buf: Vec::new(),
            procs_bytes: Vec::new(),
            path_buf: String::new(),
            slow_files: None,
            netns_cache: None,
            cgroup_io_moved: false,
            procs_dir,
            stat_file: None,
            stat_bytes: Vec::new(),
            proc_files: Vec::new(),
            lease: None,
        }
        .with_slow_files(keep_slow_open)
    }
}

impl CgroupProbe {
    fn with_slow_files(mut self, keep: bool) -> Result<Self, SysError> {
        if keep {
            let procs = HotFile::open(self.procs_dir.join("cgroup.procs"))?;
            self.stat_file = match &self.mem {
                Some(MemSource::V1 { dir, .. } | MemSource::V2 { dir, .. }) => Some(HotFile::open(dir.join("memory.stat"))?),
                None => None,
            };
            let io = match &self.io {
                IoSource::Blkio(d) => Some(HotFile::open(d.join("blkio.throttle.io_service_bytes"))?),
                IoSource::IoStat(d) => Some(HotFile::open(d.join("io.stat"))?),
                IoSource::Procs => None,
            };
            self.slow_files = Some((procs, io));
        }
        Ok(self)
    }

    /// How many files this probe keeps open.
    pub fn open_files(&self) -> usize {
        let kept = |f: Option<&HotFile>| usize::from(f.is_some_and(HotFile::is_open));
        let mem = self.mem.as_ref().map(|m| match m {
            MemSource::V1 { usage, .. } => usage,
            MemSource::V2 { current, .. } => current,
        });
        let cpu = self.cpu.as_ref().map(|c| match c {
            CpuSource::Cpuacct(f) | CpuSource::CpuStat(f) => f,
        });
        kept(mem)
            + kept(cpu)
            + kept(self.pids.as_ref())
            + self.slow_files.as_ref().map_or(0, |(_, io)| 1 + usize::from(io.is_some()))
            + usize::from(self.stat_file.is_some())
            + 2 * self.proc_files.len()
    }
}

impl Probe for CgroupProbe {
    fn fast(&mut self) -> Result<Fast, SysError> {
        let mut out = Fast::default();
        out.memory_raw = match &self.mem {
            Some(MemSource::V1 { usage, .. }) => usage.read_u64()?,
            Some(MemSource::V2 { current, .. }) => current.read_u64()?,
            None => 0,
        };
        out.memory = out.memory_raw.saturating_sub(self.inactive_file);
        match &self.cpu {
            Some(CpuSource::Cpuacct(f)) => out.cpu_ns = f.read_u64()?,
            Some(CpuSource::CpuStat(f)) => {
                let mut buf = [0u8; 512];
                let b = f.read(&mut buf)?;
                out.cpu_ns = usage_usec(b)
                    .ok_or_else(|| SysError::Parse { path: f.path().to_path_buf(), problem: "no usage_usec line".into() })?
                    .saturating_mul(1000);
            }
            None => {}
        }
        // Processes: the distinct thread-group ids of cgroup.procs (v1 may list one twice).
        let procs_dir = &self.procs_dir;
        match &self.slow_files {
            Some((procs, _)) => procs.with_file(|f, path| read_whole(f, path, &mut self.procs_bytes))?,
            None => {
                let path = procs_dir.join("cgroup.procs");
                let f = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
                read_whole(&f, &path, &mut self.procs_bytes)?;
            }
        }
        parse_pids(&self.procs_bytes, &mut self.pids_buf);
        self.pids_buf.sort_unstable();
        self.pids_buf.dedup();
        out.processes = self.pids_buf.len() as u64;
        // Threads: pids.current (tasks, what pids.max limits), else the cgroup's task list.
        out.threads = match &self.pids {
            Some(f) => f.read_u64()?,
            None => {
                let file = if fs::has(procs_dir, "cgroup.threads") { "cgroup.threads" } else { "tasks" };
                let path = procs_dir.join(file);
                let f = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
                read_whole(&f, &path, &mut self.procs_bytes)?;
                count_ids(&self.procs_bytes)
            }
        };
        Ok(out)
    }

    fn refresh_working_set(&mut self) -> Result<Option<u64>, SysError> {
        let (dir, v1) = match &self.mem {
            Some(MemSource::V1 { dir, .. }) => (dir, true),
            Some(MemSource::V2 { dir, .. }) => (dir, false),
            None => return Ok(None),
        };
        match &self.stat_file {
            Some(f) => f.with_file(|file, path| read_whole(file, path, &mut self.stat_bytes))?,
            None => {
                let path = dir.join("memory.stat");
                let f = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
                read_whole(&f, &path, &mut self.stat_bytes)?;
            }
        }
        // v1 counts the hierarchy below as `total_*` (an agent's own cgroup has no children, but be exact).
        let key: &[u8] = if v1 { b"total_inactive_file " } else { b"inactive_file " };
        self.inactive_file = keyed_u64(&self.stat_bytes, key).or_else(|| keyed_u64(&self.stat_bytes, b"inactive_file ")).unwrap_or(0);
        Ok(Some(self.inactive_file))
    }

    fn slow(&mut self) -> Result<Slow, SysError> {
        let mut buf = [0u8; 4096];
        match &self.slow_files {
            Some((procs, _)) => procs.with_file(|f, path| read_whole(f, path, &mut self.procs_bytes))?,
            None => {
                let path = self.procs_dir.join("cgroup.procs");
                let f = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
                read_whole(&f, &path, &mut self.procs_bytes)?;
            }
        }
        parse_pids(&self.procs_bytes, &mut self.pids_buf);
        self.pids_buf.sort_unstable();
        self.pids_buf.dedup();
        // The cgroup's I/O counter, where there is one; while it has never
        // moved, the processes' own counters are summed instead.
        let kept_io = self.slow_files.as_ref().and_then(|(_, io)| io.as_ref());
        let cgroup_io = match (&self.io, kept_io) {
            (IoSource::Blkio(_), Some(f)) => Some(v1::blkio::parse_service_bytes(std::str::from_utf8(f.read(&mut buf)?).unwrap_or(""))),
            (IoSource::IoStat(_), Some(f)) => Some(v2::io::parse_stat(std::str::from_utf8(f.read(&mut buf)?).unwrap_or(""))),
            (IoSource::Blkio(d), None) => {
                let b = small_read(&d.join("blkio.throttle.io_service_bytes"), &mut buf)?;
                Some(v1::blkio::parse_service_bytes(std::str::from_utf8(b).unwrap_or("")))
            }
            (IoSource::IoStat(d), None) => {
                let b = small_read(&d.join("io.stat"), &mut buf)?;
                Some(v2::io::parse_stat(std::str::from_utf8(b).unwrap_or("")))
            }
            (IoSource::Procs, _) => None,
        };
        self.cgroup_io_moved |= cgroup_io.is_some_and(|b| b > 0);
        let sum_procs = !self.cgroup_io_moved;
        let mut files = 0;
        let mut proc_io = 0u64;
        // Kept files of processes that are gone are dropped; new ones are kept while there is room.
        let pids = &self.pids_buf;
        self.proc_files.retain(|f| pids.binary_search(&f.pid).is_ok());
        for &p in &self.pids_buf {
            use std::fmt::Write as _;
            if self.slow_files.is_some() && self.proc_files.len() < PROCS_KEPT && !self.proc_files.iter().any(|f| f.pid == p) {
                if let Some(kept) = open_proc_files(&self.proc_root, p) {
                    self.proc_files.push(kept);
                }
            }
            if let Some(i) = self.proc_files.iter().position(|f| f.pid == p) {
                let kept = &self.proc_files[i];
                let fstat = rustix::fs::fstat(&kept.fd_dir);
                let io = if sum_procs { kept.io.read(&mut buf).map(|b| parse::io_bytes(b).unwrap_or(0)).map(Some) } else { Ok(None) };
                match (fstat, io) {
                    (Ok(st), Ok(io)) if st.st_size > 0 => {
                        files += st.st_size as u64;
                        proc_io = proc_io.saturating_add(io.unwrap_or(0));
                        continue;
                    }
                    // No count in st_size (an older kernel), or the process is gone: by path, as the others.
                    (Ok(_), Ok(_)) => {}
                    _ => {
                        self.proc_files.remove(i);
                    }
                }
            }
            self.path_buf.clear();
            let _ = write!(self.path_buf, "{}/{p}/fd", self.proc_root.display());
            match rustix::fs::stat(self.path_buf.as_str()) {
                Ok(st) if st.st_size > 0 => files += st.st_size as u64,
                Ok(_) => files += fds::count(&self.proc_root, p).unwrap_or(0),
                Err(_) => {}
            }
            if sum_procs {
                self.path_buf.clear();
                let _ = write!(self.path_buf, "{}/{p}/io", self.proc_root.display());
                if let Ok(b) = small_read(Path::new(self.path_buf.as_str()), &mut buf) {
                    proc_io = proc_io.saturating_add(parse::io_bytes(b).unwrap_or(0));
                }
            }
        }
        let (io_bytes, io_from) = match (&self.io, cgroup_io) {
            (IoSource::Blkio(_), Some(b)) if !sum_procs => (b, IoFrom::Blkio),
            (IoSource::IoStat(_), Some(b)) if !sum_procs => (b, IoFrom::IoStat),
            _ => (proc_io, IoFrom::Proc),
        };
        let first = self.pids_buf.first().copied().unwrap_or(0);
        if self.netns_cache.is_none_or(|(p, _)| p != first) {
            self.netns_cache = Some((first, netns(&self.proc_root, &first.to_string())));
        }
        let theirs = self.netns_cache.and_then(|(_, ns)| ns);
        let network_bytes = if theirs.is_none() || theirs == self.own_netns {
            Measure::Unsupported
        } else {
            network(&self.proc_root, self.own_netns, &self.pids_buf)
        };
        Ok(Slow { files, io_bytes, io_from, network_bytes })
    }

    fn pids(&self) -> Result<Vec<u32>, SysError> {
        self.cg.pids()
    }

    fn proc_root(&self) -> &Path {
        &self.proc_root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_cpu_stat_parsing() {
        assert_eq!(parse_u64(b"12345\n"), Some(12345));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"max\n"), None);
        assert_eq!(usage_usec(b"usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n"), Some(5000));
        assert_eq!(usage_usec(b"user_usec 3000\n"), None);
    }
}
