//! The pids controller (the same files in v1 and v2).

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// Tasks in the cgroup (`pids.current`).
pub fn current(dir: &Path) -> Result<u64, SysError> {
    fs::read_u64(dir, "pids.current")
}

/// Set `pids.max`; `None` for no limit.
pub fn set_max(dir: &Path, max: Option<u64>) -> Result<Written, SysError> {
    fs::write(dir, "pids.max", &max.map_or_else(|| "max".to_owned(), |m| m.to_string()))
}

/// Forks refused at the limit (`max` in `pids.events`).
pub fn refused(dir: &Path) -> Result<u64, SysError> {
    Ok(fs::keyed(&fs::read(dir, "pids.events")?, "max").unwrap_or(0))
}
