//! v2 cpu: `cpu.max`, `cpu.weight`, and `cpu.stat` (present without the controller).

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// The period allot uses (100 ms).
pub const PERIOD_US: u64 = 100_000;

/// Limit to `millicores` (`None` clears).
pub fn set_max(dir: &Path, millicores: Option<u64>) -> Result<Written, SysError> {
    let v = match millicores {
        Some(m) => format!("{} {PERIOD_US}", (m.saturating_mul(PERIOD_US) / 1000).max(1000)),
        None => format!("max {PERIOD_US}"),
    };
    fs::write(dir, "cpu.max", &v)
}

/// Set `cpu.weight` (1..10000).
pub fn set_weight(dir: &Path, weight: u64) -> Result<Written, SysError> {
    fs::write(dir, "cpu.weight", &weight.clamp(1, 10_000).to_string())
}

/// CPU time used, in nanoseconds (from `usage_usec`).
pub fn usage_ns(dir: &Path) -> Result<u64, SysError> {
    let path = dir.join("cpu.stat");
    let text = fs::read(dir, "cpu.stat")?;
    fs::keyed(&text, "usage_usec")
        .map(|us| us.saturating_mul(1000))
        .ok_or_else(|| SysError::Parse { path, problem: "no usage_usec line".into() })
}
