//! Probes: what an agent uses right now, for every resource of SPEC section 2.
//!
//! Hot counters (memory, cpu time, processes, threads) come from files kept
//! open and re-read with `pread` at offset 0 into a buffer: no open/close per
//! sample. `processes` counts processes (thread groups: the distinct pids of
//! `cgroup.procs`, or the processes of the tree) and `threads` counts tasks
//! (`pids.current`, what the kernel's `pids.max` limits; else the tasks
//! listed by the cgroup, or the threads of the tree's processes). Slow-moving counters (open files, sockets, block
//! I/O, network, the inactive file cache that memory usage excludes) are read
//! at a longer cadence by [`Probe::slow`]. Without a cgroup the same numbers
//! are summed over the process tree found through `/proc`.

use crate::cgroup::tree::{AgentCgroup, V1};
use crate::cgroup::{fs, v1, v2};
use crate::error::SysError;
use crate::proc::{fds, parse, tree};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file kept open and re-read from offset 0.
#[derive(Debug)]
pub struct HotFile {
    file: File,
    path: PathBuf,
}

impl HotFile {
    /// Open `path` for reading.
    pub fn open(path: PathBuf) -> Result<Self, SysError> {
        let file = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
        Ok(HotFile { file, path })
    }

    /// Read the whole file (up to the buffer's size) into `buf`.
    pub fn read<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], SysError> {
        let n = rustix::io::pread(&self.file, &mut *buf, 0).map_err(|e| SysError::Read { path: self.path.clone(), source: e.into() })?;
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

/// `usage_usec N` out of `cpu.stat` bytes.
fn usage_usec(bytes: &[u8]) -> Option<u64> {
    bytes.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"usage_usec ").and_then(parse_u64))
}

/// The fast counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fast {
    /// Bytes in use (less inactive file cache, as of the last slow sample).
    pub memory: u64,
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
    /// Files, I/O, network; also refreshes what `fast` needs slowly.
    fn slow(&mut self) -> Result<Slow, SysError>;
    /// Open sockets over the tree (a readlink per descriptor: the slowest cadence).
    fn connections(&mut self) -> Result<u64, SysError> {
        Ok(self.pids()?.iter().filter_map(|p| fds::sockets(self.proc_root(), *p)).sum())
    }
    /// The procfs root the probe reads.
    fn proc_root(&self) -> &Path;
    /// The agent's processes.
    fn pids(&self) -> Result<Vec<u32>, SysError>;
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
        let got =
            rustix::io::pread(file, &mut out[n..], n as u64).map_err(|e| SysError::Read { path: path.to_path_buf(), source: e.into() })?;
        if got == 0 {
            break;
        }
        n += got;
    }
    out.truncate(n);
    Ok(())
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
    /// pids). With `keep_slow_open`, `cgroup.procs` and the block-I/O file
    /// stay open too (five per agent): opening a cgroup file costs about
    /// 5 us here against 1 us for a `pread`, so keep them open while the
    /// open-files limit allows.
    pub fn new(cg: AgentCgroup, proc_root: PathBuf, keep_slow_open: bool) -> Result<Self, SysError> {
        let mem = if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("memory")) {
            Some(MemSource::V2 { current: HotFile::open(d.join("memory.current"))?, dir: d.to_path_buf() })
        } else if let Some(d) = cg.v1(V1::Memory) {
            Some(MemSource::V1 { usage: HotFile::open(d.join("memory.usage_in_bytes"))?, dir: d.to_path_buf() })
        } else {
            None
        };
        // v2 cpu.stat when the v2 cpu controller is in use or there is no
        // cpuacct; on hybrid hosts cpuacct.usage is cheaper to generate.
        let v2_cpu = cg.v2().filter(|d| fs::has(d, "cpu.stat"));
        let cpu = match (v2_cpu, cg.v1(V1::Cpuacct)) {
            (Some(d), _) if cg.dirs.v2_has("cpu") => Some(CpuSource::CpuStat(HotFile::open(d.join("cpu.stat"))?)),
            (_, Some(d)) => Some(CpuSource::Cpuacct(HotFile::open(d.join("cpuacct.usage"))?)),
            (Some(d), None) => Some(CpuSource::CpuStat(HotFile::open(d.join("cpu.stat"))?)),
            (None, None) => None,
        };
        let pids_dir = if cg.dirs.v2_has("pids") { cg.v2() } else { cg.v1(V1::Pids) };
        let pids = pids_dir.map(|d| HotFile::open(d.join("pids.current"))).transpose()?;
        let io = if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("io")) {
            IoSource::IoStat(d.to_path_buf())
        } else if let Some(d) = cg.v1(V1::Blkio) {
            IoSource::Blkio(d.to_path_buf())
        } else {
            IoSource::Procs
        };
        let own_netns = netns(&proc_root, "self");
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
        }
        .with_slow_files(keep_slow_open)
    }
}

impl CgroupProbe {
    fn with_slow_files(mut self, keep: bool) -> Result<Self, SysError> {
        if keep {
            let procs_dir = self.cg.dirs.all().into_iter().next().map(Path::to_path_buf).unwrap_or_default();
            let procs = HotFile::open(procs_dir.join("cgroup.procs"))?;
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
        usize::from(self.mem.is_some())
            + usize::from(self.cpu.is_some())
            + usize::from(self.pids.is_some())
            + self.slow_files.as_ref().map_or(0, |(_, io)| 1 + usize::from(io.is_some()))
    }
}

fn netns(proc_root: &Path, pid: &str) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid).join("ns/net")).ok().map(|m| m.ino())
}

/// Files and (when `io` is true) block I/O summed over `pids`.
fn per_process(proc_root: &Path, pids: &[u32], io: bool) -> (u64, u64) {
    let (mut files, mut io_bytes) = (0, 0);
    let mut buf = [0u8; 512];
    for &p in pids {
        files += fds::count(proc_root, p).unwrap_or(0);
        if io {
            if let Ok(f) = HotFile::open(proc_root.join(p.to_string()).join("io")) {
                if let Ok(b) = f.read(&mut buf) {
                    io_bytes += parse::io_bytes(b).unwrap_or(0);
                }
            }
        }
    }
    (files, io_bytes)
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

impl Probe for CgroupProbe {
    fn fast(&mut self) -> Result<Fast, SysError> {
        let mut out = Fast::default();
        match &self.mem {
            Some(MemSource::V1 { usage, .. }) => out.memory = usage.read_u64()?.saturating_sub(self.inactive_file),
            Some(MemSource::V2 { current, .. }) => out.memory = current.read_u64()?.saturating_sub(self.inactive_file),
            None => {}
        }
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
        let procs_dir = self.cg.dirs.all().into_iter().next().map(Path::to_path_buf).unwrap_or_default();
        match &self.slow_files {
            Some((procs, _)) => read_whole(&procs.file, &procs.path, &mut self.procs_bytes)?,
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
                let file = if fs::has(&procs_dir, "cgroup.threads") { "cgroup.threads" } else { "tasks" };
                let path = procs_dir.join(file);
                let f = File::open(&path).map_err(|source| SysError::Read { path: path.clone(), source })?;
                read_whole(&f, &path, &mut self.procs_bytes)?;
                count_ids(&self.procs_bytes)
            }
        };
        Ok(out)
    }

    fn slow(&mut self) -> Result<Slow, SysError> {
        // memory.stat is large (about 7 us to read here), so it is read at the
        // slow cadence; its inactive-file figure is subtracted from every fast
        // memory reading and must not grow staler than one slow period.
        {
            self.inactive_file = match &self.mem {
                Some(MemSource::V1 { dir, .. }) => {
                    let stat = fs::read(dir, "memory.stat")?;
                    fs::keyed(&stat, "total_inactive_file").or_else(|| fs::keyed(&stat, "inactive_file")).unwrap_or(0)
                }
                Some(MemSource::V2 { dir, .. }) => fs::keyed(&fs::read(dir, "memory.stat")?, "inactive_file").unwrap_or(0),
                None => 0,
            };
        }
        let mut buf = [0u8; 4096];
        match &self.slow_files {
            Some((procs, _)) => read_whole(&procs.file, &procs.path, &mut self.procs_bytes)?,
            None => {
                let path = self.cg.dirs.all().into_iter().next().map(Path::to_path_buf).unwrap_or_default().join("cgroup.procs");
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
        for &p in &self.pids_buf {
            use std::fmt::Write as _;
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

/// A probe summing over a process tree found through `/proc` (no cgroup).
/// Keeps each process's `stat` open (one file per process). CPU time of
/// processes that already exited is not counted.
#[derive(Debug)]
pub struct TreeProbe {
    proc_root: PathBuf,
    root: u32,
    stats: BTreeMap<u32, (u64, HotFile)>,
    page_size: u64,
    ns_per_tick: u64,
    own_netns: Option<u64>,
}

impl TreeProbe {
    /// Probe the tree rooted at `root`.
    pub fn new(proc_root: PathBuf, root: u32) -> Self {
        let own_netns = netns(&proc_root, "self");
        TreeProbe {
            proc_root,
            root,
            stats: BTreeMap::new(),
            page_size: rustix::param::page_size() as u64,
            ns_per_tick: 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1),
            own_netns,
        }
    }
}

impl Probe for TreeProbe {
    fn fast(&mut self) -> Result<Fast, SysError> {
        let pids = tree::descendants(&self.proc_root, self.root);
        self.stats.retain(|p, _| pids.contains(p));
        let mut out = Fast::default();
        let mut buf = [0u8; 1024];
        for p in pids {
            if !self.stats.contains_key(&p) {
                let Ok(f) = HotFile::open(self.proc_root.join(p.to_string()).join("stat")) else {
                    continue;
                };
                self.stats.insert(p, (0, f));
            }
            let Some((start, f)) = self.stats.get_mut(&p) else {
                continue;
            };
            let Ok(bytes) = f.read(&mut buf) else {
                self.stats.remove(&p);
                continue;
            };
            let Some(s) = parse::stat(bytes) else {
                continue;
            };
            if *start != 0 && *start != s.starttime {
                continue; // the pid was reused by a new process: reopened next time
            }
            *start = s.starttime;
            if s.state == b'Z' {
                continue;
            }
            out.memory += s.rss_pages * self.page_size;
            out.cpu_ns += (s.utime + s.stime) * self.ns_per_tick;
            out.processes += 1;
            out.threads += s.num_threads.max(1);
        }
        Ok(out)
    }

    fn slow(&mut self) -> Result<Slow, SysError> {
        let pids = tree::descendants(&self.proc_root, self.root);
        let (files, io_bytes) = per_process(&self.proc_root, &pids, true);
        Ok(Slow { files, io_bytes, io_from: IoFrom::Proc, network_bytes: network(&self.proc_root, self.own_netns, &pids) })
    }

    fn pids(&self) -> Result<Vec<u32>, SysError> {
        Ok(tree::descendants(&self.proc_root, self.root))
    }

    fn proc_root(&self) -> &Path {
        &self.proc_root
    }
}

/// Bytes stored under `dir` (allocated blocks; no symlinks followed; other
/// filesystems not entered; a file with several hard links counted once), in
/// one walk of the whole tree. The governor uses [`DiskWalk`], which bounds
/// the cost of one call.
pub fn disk_usage(dir: &Path) -> Result<u64, SysError> {
    let mut w = DiskWalk::new(dir.to_path_buf());
    loop {
        if let Some(total) = w.step(usize::MAX)? {
            return Ok(total);
        }
    }
}

/// A workspace's disk usage, walked at most a given number of entries per
/// call ([`DiskWalk::step`]): a large tree is measured over several calls
/// (one open directory per level of the walk is kept between them), and
/// each completed pass gives the total, measured the way [`disk_usage`]
/// measures it. Then the next call starts a new pass.
#[derive(Debug)]
pub struct DiskWalk {
    root: PathBuf,
    /// The device of the root: other filesystems mounted beneath are not entered.
    dev: Option<u64>,
    /// Directories still to read, and the one being read.
    stack: Vec<PathBuf>,
    current: Option<std::fs::ReadDir>,
    /// Blocks counted so far in this pass, in bytes.
    partial: u64,
    /// Inodes with several links seen in this pass.
    linked: std::collections::HashSet<u64>,
    /// Whether a pass is under way.
    walking: bool,
}

impl DiskWalk {
    /// A walk of the tree under `root` (no pass started yet).
    pub fn new(root: PathBuf) -> Self {
        DiskWalk { root, dev: None, stack: Vec::new(), current: None, partial: 0, linked: std::collections::HashSet::new(), walking: false }
    }

    /// The directory measured.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Look at up to `budget` entries (at least one); the total in bytes when
    /// this call finished a pass. An error when the root itself cannot be read
    /// (entries that vanish or cannot be read during the walk are skipped).
    pub fn step(&mut self, budget: usize) -> Result<Option<u64>, SysError> {
        if !self.walking {
            let meta = std::fs::symlink_metadata(&self.root).map_err(|source| SysError::Read { path: self.root.clone(), source })?;
            if !meta.is_dir() {
                let source = std::io::Error::other("not a directory");
                return Err(SysError::Read { path: self.root.clone(), source });
            }
            self.dev = Some(meta.dev());
            self.stack = vec![self.root.clone()];
            self.current = None;
            self.partial = 0;
            self.linked.clear();
            self.walking = true;
        }
        let mut left = budget.max(1);
        while left > 0 {
            let Some(rd) = self.current.as_mut() else {
                match self.stack.pop() {
                    Some(d) => self.current = std::fs::read_dir(&d).ok(),
                    None => {
                        self.walking = false;
                        return Ok(Some(self.partial));
                    }
                }
                continue;
            };
            match rd.next() {
                None => self.current = None,
                Some(Err(_)) => left -= 1,
                Some(Ok(e)) => {
                    left -= 1;
                    let Ok(m) = e.metadata() else { continue };
                    if Some(m.dev()) != self.dev {
                        continue;
                    }
                    if m.is_dir() {
                        self.stack.push(e.path());
                    } else if m.nlink() > 1 && !self.linked.insert(m.ino()) {
                        continue;
                    }
                    self.partial = self.partial.saturating_add(m.blocks().saturating_mul(512));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn number_and_cpu_stat_parsing() {
        assert_eq!(parse_u64(b"12345\n"), Some(12345));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"max\n"), None);
        assert_eq!(usage_usec(b"usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n"), Some(5000));
        assert_eq!(usage_usec(b"user_usec 3000\n"), None);
    }

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

    #[test]
    fn a_disk_walk_spread_over_calls_finds_what_one_walk_finds() {
        let t = tempfile::tempdir().unwrap();
        for d in 0..5 {
            let dir = t.path().join(format!("d{d}/inner"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                std::fs::write(dir.join(format!("f{f}")), vec![7u8; 5000 * (f + 1)]).unwrap();
            }
        }
        // A hard link is counted once.
        std::fs::hard_link(t.path().join("d0/inner/f19"), t.path().join("d0/link")).unwrap();
        let whole = disk_usage(t.path()).unwrap();
        let mut w = DiskWalk::new(t.path().to_path_buf());
        let mut calls = 0;
        let total = loop {
            calls += 1;
            if let Some(total) = w.step(7).unwrap() {
                break total;
            }
        };
        assert_eq!(total, whole);
        assert!(calls > 15, "7 entries a call over 111 entries: {calls} calls");
        std::fs::write(t.path().join("more"), vec![1u8; 1 << 20]).unwrap();
        let again = loop {
            if let Some(total) = w.step(1000).unwrap() {
                break total;
            }
        };
        assert!(again >= whole + (1 << 20), "a new pass sees the new file: {again} after {whole}");
        let missing = DiskWalk::new(t.path().join("nope")).step(10).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }

    #[test]
    fn the_tree_probe_measures_a_real_child() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]).spawn().unwrap();
        let mut p = TreeProbe::new(PathBuf::from("/proc"), child.id());
        let mut fast = Fast::default();
        for _ in 0..200 {
            fast = p.fast().unwrap();
            if fast.processes == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fast.processes, 3);
        assert_eq!(fast.threads, 3, "single-threaded processes");
        assert!(fast.memory > 0);
        let slow = p.slow().unwrap();
        assert!(slow.files >= 3, "{slow:?}");
        assert_eq!(slow.network_bytes, Measure::Unsupported, "same network namespace as allot");
        for pid in p.pids().unwrap().iter().rev() {
            let _ = crate::signal::signal_all(&[*pid], rustix::process::Signal::KILL);
        }
        let _ = child.wait();
    }
}
