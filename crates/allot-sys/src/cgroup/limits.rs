//! Reading the limits of an existing cgroup (allot's own, for the host spec):
//! memory ceiling, cpu quota and pids.max, in both versions, as the minimum
//! over the cgroup and its ancestors up to the hierarchy's mount point.

use crate::error::{SysError, read};
use std::path::{Path, PathBuf};

/// v1 reports "no memory limit" as a page-rounded i64::MAX; anything this
/// large is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// A limit found in a cgroup file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundLimit {
    /// The value in allot's internal unit.
    pub value: u64,
    /// The file it came from.
    pub file: PathBuf,
}

/// Parse a v2 `memory.max` / `pids.max` style value: a number or `max`.
pub fn parse_max(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    t.parse::<u64>().map(Some).map_err(|_| format!("expected a number or \"max\", got {t:?}"))
}

/// Parse v1 `memory.limit_in_bytes`.
pub fn parse_v1_memory_limit(text: &str) -> Result<Option<u64>, String> {
    let v: u64 = text.trim().parse().map_err(|_| format!("expected a number, got {:?}", text.trim()))?;
    Ok((v < V1_UNLIMITED).then_some(v))
}

/// Parse v2 `cpu.max` (`QUOTA PERIOD` or `max PERIOD`) to millicores.
pub fn parse_cpu_max(text: &str) -> Result<Option<u64>, String> {
    let mut parts = text.split_whitespace();
    let quota = parts.next().ok_or("empty cpu.max")?;
    let period: u64 = match parts.next() {
        Some(p) => p.parse().map_err(|_| format!("bad period {p:?}"))?,
        None => 100_000,
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| format!("bad quota {quota:?}"))?;
    quota_to_millicores(quota as i64, period)
}

/// v1 `cpu.cfs_quota_us` (-1 = unlimited) over `cpu.cfs_period_us`, in millicores.
pub fn quota_to_millicores(quota: i64, period: u64) -> Result<Option<u64>, String> {
    if quota < 0 {
        return Ok(None);
    }
    if period == 0 {
        return Err("cpu period is 0".into());
    }
    Ok(Some((quota as u64).saturating_mul(1000) / period))
}

/// Walk from `dir` up to `top` (inclusive) and return the smallest limit that
/// `read_one` finds; files that do not exist are skipped.
fn min_up<F>(dir: &Path, top: &Path, mut read_one: F) -> Result<Option<FoundLimit>, SysError>
where
    F: FnMut(&Path) -> Result<Option<FoundLimit>, SysError>,
{
    let mut best: Option<FoundLimit> = None;
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if let Some(found) = read_one(d)? {
            if best.as_ref().is_none_or(|b| found.value < b.value) {
                best = Some(found);
            }
        }
        if d == top {
            break;
        }
        cur = d.parent().filter(|p| p.starts_with(top));
    }
    Ok(best)
}

fn read_opt(path: &Path) -> Result<Option<String>, SysError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysError::Read { path: path.to_path_buf(), source }),
    }
}

fn parsed(path: &Path, f: fn(&str) -> Result<Option<u64>, String>) -> Result<Option<FoundLimit>, SysError> {
    let Some(text) = read_opt(path)? else {
        return Ok(None);
    };
    let value = f(&text).map_err(|problem| SysError::Parse { path: path.to_path_buf(), problem })?;
    Ok(value.map(|value| FoundLimit { value, file: path.to_path_buf() }))
}

/// The effective v1 memory limit of `dir` (in the memory hierarchy mounted at `top`).
pub fn v1_memory(dir: &Path, top: &Path) -> Result<Option<FoundLimit>, SysError> {
    min_up(dir, top, |d| parsed(&d.join("memory.limit_in_bytes"), parse_v1_memory_limit))
}

/// The effective v1 cpu limit, in millicores.
pub fn v1_cpu(dir: &Path, top: &Path) -> Result<Option<FoundLimit>, SysError> {
    min_up(dir, top, |d| {
        let qpath = d.join("cpu.cfs_quota_us");
        let Some(q) = read_opt(&qpath)? else {
            return Ok(None);
        };
        let ppath = d.join("cpu.cfs_period_us");
        let p = read(&ppath)?;
        let bad = |path: &Path, problem: String| SysError::Parse { path: path.to_path_buf(), problem };
        let quota: i64 = q.trim().parse().map_err(|_| bad(&qpath, format!("expected a number, got {:?}", q.trim())))?;
        let period: u64 = p.trim().parse().map_err(|_| bad(&ppath, format!("expected a number, got {:?}", p.trim())))?;
        let v = quota_to_millicores(quota, period).map_err(|e| bad(&ppath, e))?;
        Ok(v.map(|value| FoundLimit { value, file: qpath }))
    })
}

/// The effective pids limit (same file in v1 and v2).
pub fn pids(dir: &Path, top: &Path) -> Result<Option<FoundLimit>, SysError> {
    min_up(dir, top, |d| parsed(&d.join("pids.max"), parse_max))
}

/// The effective v2 memory limit (`memory.max`).
pub fn v2_memory(dir: &Path, top: &Path) -> Result<Option<FoundLimit>, SysError> {
    min_up(dir, top, |d| parsed(&d.join("memory.max"), parse_max))
}

/// The effective v2 cpu limit (`cpu.max`), in millicores.
pub fn v2_cpu(dir: &Path, top: &Path) -> Result<Option<FoundLimit>, SysError> {
    min_up(dir, top, |d| parsed(&d.join("cpu.max"), parse_cpu_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn parsers() {
        assert_eq!(parse_max("max\n"), Ok(None));
        assert_eq!(parse_max("1024\n"), Ok(Some(1024)));
        assert!(parse_max("lots").is_err());
        assert_eq!(parse_v1_memory_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_v1_memory_limit("67108864\n"), Ok(Some(64 << 20)));
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("50000 100000\n"), Ok(Some(500)));
        assert_eq!(parse_cpu_max("150000 100000"), Ok(Some(1500)));
        assert_eq!(quota_to_millicores(-1, 100_000), Ok(None));
        assert!(quota_to_millicores(1, 0).is_err());
    }

    #[test]
    fn the_smallest_limit_on_the_way_up_wins() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("memory");
        let mid = top.join("a");
        let own = mid.join("b");
        fs::create_dir_all(&own).unwrap();
        fs::write(top.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        fs::write(mid.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        fs::write(own.join("memory.limit_in_bytes"), "2147483648\n").unwrap();
        let found = v1_memory(&own, &top).unwrap().unwrap();
        assert_eq!(found, FoundLimit { value: 1 << 30, file: mid.join("memory.limit_in_bytes") });
        // A missing file is no limit; a garbled one is an error naming the file.
        assert_eq!(pids(&own, &top).unwrap(), None);
        fs::write(own.join("pids.max"), "many\n").unwrap();
        let e = pids(&own, &top).unwrap_err().to_string();
        assert!(e.contains("pids.max") && e.contains("\"many\""), "{e}");
        fs::write(own.join("cpu.cfs_quota_us"), "20000\n").unwrap();
        fs::write(own.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(v1_cpu(&own, &top).unwrap().unwrap().value, 200);
    }
}
