//! v1 memory controller: usage less inactive file cache, ceiling, OOM kills,
//! usage thresholds through `cgroup.event_control` and an eventfd.

use crate::cgroup::OomCounters;
use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Usage as SPEC section 2 defines it: `memory.usage_in_bytes` less inactive file cache.
pub fn usage(dir: &Path) -> Result<u64, SysError> {
    let usage = fs::read_u64(dir, "memory.usage_in_bytes")?;
    let stat = fs::read(dir, "memory.stat")?;
    Ok(usage_from(usage, &stat))
}

/// The same from the two files' text.
pub fn usage_from(usage_in_bytes: u64, stat: &str) -> u64 {
    let inactive = fs::keyed(stat, "total_inactive_file").or_else(|| fs::keyed(stat, "inactive_file")).unwrap_or(0);
    usage_in_bytes.saturating_sub(inactive)
}

/// Set the ceiling (`memory.limit_in_bytes`); with swap accounting, the
/// memory+swap ceiling too, so the limit cannot be escaped into swap.
pub fn set_limit(dir: &Path, bytes: u64) -> Result<Vec<Written>, SysError> {
    let mut out = Vec::new();
    let v = bytes.to_string();
    if fs::has(dir, "memory.memsw.limit_in_bytes") {
        // memsw must stay >= limit: raise the limit first when lowering memsw would fail.
        let cur = fs::read_u64(dir, "memory.limit_in_bytes")?;
        if bytes <= cur {
            out.push(fs::write(dir, "memory.limit_in_bytes", &v)?);
            out.push(fs::write(dir, "memory.memsw.limit_in_bytes", &v)?);
        } else {
            out.push(fs::write(dir, "memory.memsw.limit_in_bytes", &v)?);
            out.push(fs::write(dir, "memory.limit_in_bytes", &v)?);
        }
    } else {
        out.push(fs::write(dir, "memory.limit_in_bytes", &v)?);
    }
    Ok(out)
}

/// Remove the ceiling.
pub fn clear_limit(dir: &Path) -> Result<Vec<Written>, SysError> {
    let mut out = Vec::new();
    if fs::has(dir, "memory.memsw.limit_in_bytes") {
        out.push(fs::write(dir, "memory.memsw.limit_in_bytes", "-1")?);
    }
    out.push(fs::write(dir, "memory.limit_in_bytes", "-1")?);
    Ok(out)
}

/// How many processes the OOM killer killed in this cgroup (`memory.oom_control`).
pub fn oom_kills(dir: &Path) -> Result<u64, SysError> {
    Ok(fs::keyed(&fs::read(dir, "memory.oom_control")?, "oom_kill").unwrap_or(0))
}

/// Anything at or above this in `memory.limit_in_bytes` is "no limit" (the
/// kernel shows its page counter maximum, 9223372036854771712 with 4 KiB pages).
const NO_LIMIT: u64 = 1 << 62;

/// The OOM counters of a cgroup: `oom_kill` of `memory.oom_control` (kernels
/// 4.13 and later; counted in the cgroup of the killed process, whichever limit was
/// hit, and not propagated to parents on v1), the charges refused at this
/// cgroup's own limit (`memory.failcnt` plus `memory.memsw.failcnt`: with
/// swap accounting the memory+swap counter is charged first and fails first;
/// 6.x kernels were seen to leave both at 0 after an OOM kill at the limit),
/// the usage peak (`memory.max_usage_in_bytes`, `memory.memsw.max_usage_in_bytes`)
/// and the limit itself.
pub fn oom_counters(dir: &Path) -> Result<OomCounters, SysError> {
    let oom = fs::read(dir, "memory.oom_control")?;
    let memsw = |file: &str| if fs::has(dir, file) { fs::read_u64(dir, file) } else { Ok(0) };
    let limit = fs::read_u64(dir, "memory.limit_in_bytes")?;
    Ok(OomCounters {
        oom_kills: fs::keyed(&oom, "oom_kill").unwrap_or(0),
        limit_hits: fs::read_u64(dir, "memory.failcnt")?.saturating_add(memsw("memory.memsw.failcnt")?),
        peak: Some(fs::read_u64(dir, "memory.max_usage_in_bytes")?.max(memsw("memory.memsw.max_usage_in_bytes")?)),
        limit: (limit < NO_LIMIT).then_some(limit),
    })
}

/// Arm a usage threshold: the returned eventfd becomes readable when usage
/// crosses `bytes` (in either direction).
pub fn threshold(dir: &Path, bytes: u64) -> Result<OwnedFd, SysError> {
    let usage_path = dir.join("memory.usage_in_bytes");
    let usage_file = std::fs::File::open(&usage_path).map_err(|source| SysError::Read { path: usage_path.clone(), source })?;
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
        .map_err(|e| SysError::Read { path: "eventfd".into(), source: e.into() })?;
    let line = format!("{} {} {}", efd.as_fd().as_raw_fd(), usage_file.as_raw_fd(), bytes);
    fs::write(dir, "cgroup.event_control", &line)?;
    // The kernel keeps its own reference to the usage file; ours can close.
    Ok(efd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_excludes_inactive_file_cache() {
        assert_eq!(usage_from(10_000, "cache 5000\ntotal_inactive_file 3000\n"), 7000);
        assert_eq!(usage_from(10_000, "inactive_file 3000\n"), 7000);
        assert_eq!(usage_from(1000, "total_inactive_file 3000\n"), 0);
    }

    #[test]
    fn limit_writes_memsw_in_the_order_the_kernel_accepts() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(d.join("memory.memsw.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let w = set_limit(d, 64 << 20).unwrap();
        let files: Vec<_> = w.iter().map(|w| w.path.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(files, ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]);
        std::fs::write(d.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        let w = set_limit(d, 128 << 20).unwrap();
        assert_eq!(w[0].path.file_name().unwrap(), "memory.memsw.limit_in_bytes", "raising: memsw first");
    }
}
