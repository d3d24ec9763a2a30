//! The host spec (SPEC section 3) read from this machine: `/proc/meminfo`,
//! the online CPUs, `kernel.pid_max` and `kernel.threads-max`, lowered by
//! the limits of the cgroup allot runs in.

use crate::Roots;
use crate::cgroup::limits::{self, FoundLimit};
use crate::cgroup::{Layout, Mode};
use crate::error::{SysError, read};
use allot_core::host::{DEFAULT_FILES, DEFAULT_NETWORK, HostTotals};
use std::path::Path;

/// The host's totals and where each came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostReading {
    /// The totals.
    pub totals: HostTotals,
    /// For each of memory, cpu, processes, files, network: where the value came from.
    pub sources: Vec<(&'static str, String)>,
    /// The cgroup layout found.
    pub mode: Mode,
}

/// The host's memory now, for pressure decisions: from `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`: what can be allocated without swapping (free memory plus reclaimable caches).
    pub available: u64,
}

/// One field of `/proc/meminfo` text (`MemTotal:  24634404 kB`), in bytes.
pub fn parse_meminfo_field(text: &str, field: &str) -> Result<u64, String> {
    let line = text.lines().find(|l| l.split_once(':').is_some_and(|(k, _)| k == field)).ok_or_else(|| format!("no {field} line"))?;
    let mut parts = line[field.len() + 1..].split_whitespace();
    let n: u64 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(|| format!("bad {field} line {line:?}"))?;
    match parts.next() {
        Some("kB") => Ok(n.saturating_mul(1024)),
        None => Ok(n),
        Some(u) => Err(format!("unknown unit {u:?} in {field}")),
    }
}

/// `MemTotal` from `/proc/meminfo` text, in bytes.
pub fn parse_meminfo_total(text: &str) -> Result<u64, String> {
    parse_meminfo_field(text, "MemTotal")
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    Ok(MemInfo { total: parse_meminfo_field(text, "MemTotal")?, available: parse_meminfo_field(text, "MemAvailable")? })
}

/// Read the host's memory from `/proc/meminfo` under `roots`; errors name the file and the field.
pub fn meminfo(roots: &Roots) -> Result<MemInfo, SysError> {
    let path = roots.proc.join("meminfo");
    parse_meminfo(&read(&path)?).map_err(|problem| SysError::Parse { path, problem })
}

/// The number of CPUs in a list such as `0-3,8,10-11` (`/sys/devices/system/cpu/online`).
pub fn parse_cpu_list(text: &str) -> Result<u64, String> {
    let mut n = 0u64;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list entry {part:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                n += b - a + 1;
            }
            None => {
                part.parse::<u64>().map_err(|_| bad())?;
                n += 1;
            }
        }
    }
    if n == 0 { Err("empty cpu list".into()) } else { Ok(n) }
}

fn read_u64(path: &Path) -> Result<u64, SysError> {
    let t = read(path)?;
    t.trim().parse().map_err(|_| SysError::Parse { path: path.to_path_buf(), problem: format!("expected a number, got {:?}", t.trim()) })
}

fn lower(total: &mut u64, source: &mut String, found: Option<FoundLimit>) {
    if let Some(f) = found {
        if f.value < *total {
            *total = f.value;
            *source = format!("limit in {}", f.file.display());
        }
    }
}

/// Read the host totals. `files` and `network` are configured values
/// (`None` for the defaults: 10,000 files, 1 Gbit/s).
pub fn read_host(roots: &Roots, files: Option<u64>, network: Option<u64>) -> Result<HostReading, SysError> {
    let meminfo = roots.proc.join("meminfo");
    let mut memory = parse_meminfo_total(&read(&meminfo)?).map_err(|problem| SysError::Parse { path: meminfo.clone(), problem })?;
    let mut memory_src = format!("MemTotal in {}", meminfo.display());

    let online = roots.path(Path::new("/sys/devices/system/cpu/online"));
    let cpus = parse_cpu_list(&read(&online)?).map_err(|problem| SysError::Parse { path: online.clone(), problem })?;
    let mut cpu = cpus * 1000;
    let mut cpu_src = format!("{cpus} online CPUs in {}", online.display());

    let pid_max = read_u64(&roots.proc.join("sys/kernel/pid_max"))?;
    let threads_max = read_u64(&roots.proc.join("sys/kernel/threads-max"))?;
    let mut processes = pid_max.min(threads_max);
    let mut processes_src = if pid_max <= threads_max { "kernel.pid_max".to_owned() } else { "kernel.threads-max".to_owned() };

    let layout = Layout::discover(roots)?;
    let mode = layout.mode();
    let host_path = |p: &Path| roots.path(p);
    let top_of = |dir: &Path| layout.mount_of(dir).map(host_path);
    if let Some(dir) = layout.v1_dir("memory") {
        if let Some(top) = top_of(&dir) {
            lower(&mut memory, &mut memory_src, limits::v1_memory(&host_path(&dir), &top)?);
        }
    }
    if let Some(dir) = layout.v1_dir("cpu") {
        if let Some(top) = top_of(&dir) {
            lower(&mut cpu, &mut cpu_src, limits::v1_cpu(&host_path(&dir), &top)?);
        }
    }
    if let Some(dir) = layout.v1_dir("pids") {
        if let Some(top) = top_of(&dir) {
            lower(&mut processes, &mut processes_src, limits::pids(&host_path(&dir), &top)?);
        }
    }
    if let Some(dir) = layout.v2_dir() {
        if let Some(top) = top_of(&dir) {
            let own = host_path(&dir);
            lower(&mut memory, &mut memory_src, limits::v2_memory(&own, &top)?);
            lower(&mut cpu, &mut cpu_src, limits::v2_cpu(&own, &top)?);
            lower(&mut processes, &mut processes_src, limits::pids(&own, &top)?);
        }
    }
    let files_src = if files.is_some() { "configured" } else { "default (the sketch's 10,000)" };
    let network_src = if network.is_some() { "configured" } else { "default (1 Gbit/s)" };
    Ok(HostReading {
        totals: HostTotals { memory, cpu, processes, files: files.unwrap_or(DEFAULT_FILES), network: network.unwrap_or(DEFAULT_NETWORK) },
        sources: vec![
            ("memory", memory_src),
            ("cpu", cpu_src),
            ("processes", processes_src),
            ("files", files_src.to_owned()),
            ("network", network_src.to_owned()),
        ],
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn parsers_on_fixture_text() {
        assert_eq!(parse_meminfo_total("MemTotal:       24634404 kB\nMemFree: 1 kB\n"), Ok(24_634_404 * 1024));
        assert!(parse_meminfo_total("MemFree: 1 kB\n").is_err());
        let text = "MemTotal:       24634404 kB\nMemFree:         1200000 kB\nMemAvailable:   16000000 kB\nBuffers: 3 kB\n";
        assert_eq!(parse_meminfo(text), Ok(MemInfo { total: 24_634_404 * 1024, available: 16_000_000 * 1024 }));
        assert_eq!(parse_meminfo("MemTotal: 8 kB\n"), Err("no MemAvailable line".into()));
        assert_eq!(parse_meminfo("MemTotal: 8 kB\nMemAvailable: lots kB\n"), Err("bad MemAvailable line \"MemAvailable: lots kB\"".into()));
        assert_eq!(parse_meminfo("MemTotal: 8 MB\nMemAvailable: 1 kB\n"), Err("unknown unit \"MB\" in MemTotal".into()));
        // A field whose name starts like another's is not taken for it.
        assert!(parse_meminfo_field("MemTotalX: 5 kB\n", "MemTotal").is_err());
        assert_eq!(parse_cpu_list("0-1\n"), Ok(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Ok(7));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn meminfo_reads_the_file_and_errors_name_file_and_field() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "proc/meminfo", "MemTotal:       8388608 kB\nMemFree: 1 kB\nMemAvailable:    2097152 kB\n");
        assert_eq!(meminfo(&Roots::under(t.path())).unwrap(), MemInfo { total: 8 << 30, available: 2 << 30 });
        write(t.path(), "proc/meminfo", "MemTotal:       8388608 kB\n");
        let e = meminfo(&Roots::under(t.path())).unwrap_err().to_string();
        assert!(e.contains("proc/meminfo") && e.contains("MemAvailable"), "{e}");
        let gone = meminfo(&Roots::under(&t.path().join("nowhere"))).unwrap_err().to_string();
        assert!(gone.contains("nowhere/proc/meminfo"), "{gone}");
    }

    #[test]
    fn a_fake_hybrid_host_with_a_memory_limited_cgroup() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "proc/meminfo", "MemTotal:       8388608 kB\n");
        write(r, "sys/devices/system/cpu/online", "0-3\n");
        write(r, "proc/sys/kernel/pid_max", "4194304\n");
        write(r, "proc/sys/kernel/threads-max", "190000\n");
        write(r, "proc/self/mountinfo", crate::cgroup::tests_fixtures::HYBRID_MOUNTINFO);
        write(r, "proc/self/cgroup", crate::cgroup::tests_fixtures::HYBRID_CGROUP);
        write(r, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
        write(r, "sys/fs/cgroup/memory/process_api/c129/memory.limit_in_bytes", "4294967296\n");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        write(r, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        let h = read_host(&Roots::under(r), None, None).unwrap();
        assert_eq!(h.mode, Mode::Hybrid);
        assert_eq!(h.totals, HostTotals { memory: 4 << 30, cpu: 4000, processes: 190_000, files: 10_000, network: 125_000_000 });
        assert!(h.sources[0].1.contains("process_api/c129/memory.limit_in_bytes"), "{:?}", h.sources);
        assert_eq!(h.sources[2].1, "kernel.threads-max");
        // A garbled file is an error naming it.
        write(r, "proc/sys/kernel/pid_max", "lots\n");
        let e = read_host(&Roots::under(r), None, None).unwrap_err().to_string();
        assert!(e.contains("pid_max") && e.contains("lots"), "{e}");
    }
}
