//! v1 cpu and cpuacct controllers: CFS quota, shares, and CPU time used.

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// The CFS period allot uses (100 ms, the kernel default).
pub const PERIOD_US: u64 = 100_000;

/// Limit the cgroup to `millicores` of CPU (minimum 1 ms per period).
pub fn set_limit(dir: &Path, millicores: u64) -> Result<Vec<Written>, SysError> {
    let quota = (millicores.saturating_mul(PERIOD_US) / 1000).max(1000);
    Ok(vec![fs::write(dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?, fs::write(dir, "cpu.cfs_quota_us", &quota.to_string())?])
}

/// Remove the limit.
pub fn clear_limit(dir: &Path) -> Result<Vec<Written>, SysError> {
    Ok(vec![fs::write(dir, "cpu.cfs_quota_us", "-1")?])
}

/// Set the weight (v2 scale 1..10000, 100 default) as v1 shares (1024 default).
pub fn set_weight(dir: &Path, weight: u64) -> Result<Written, SysError> {
    let shares = (weight.clamp(1, 10_000) * 1024 / 100).max(2);
    fs::write(dir, "cpu.shares", &shares.to_string())
}

/// CPU time used, in nanoseconds (`cpuacct.usage`).
pub fn usage_ns(cpuacct_dir: &Path) -> Result<u64, SysError> {
    fs::read_u64(cpuacct_dir, "cpuacct.usage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_shares() {
        let t = tempfile::tempdir().unwrap();
        let w = set_limit(t.path(), 200).unwrap();
        assert_eq!(w[1].value, "20000");
        assert_eq!(std::fs::read_to_string(t.path().join("cpu.cfs_quota_us")).unwrap(), "20000");
        assert_eq!(set_limit(t.path(), 1).unwrap()[1].value, "1000", "the kernel's minimum quota");
        assert_eq!(set_weight(t.path(), 100).unwrap().value, "1024");
        assert_eq!(set_weight(t.path(), 200).unwrap().value, "2048");
    }
}
