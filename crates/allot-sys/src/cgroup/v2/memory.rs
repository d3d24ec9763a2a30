//! v2 memory controller: `memory.current`, `memory.max`, `memory.high`, `memory.events`.

use crate::cgroup::OomCounters;
use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// `memory.current` less inactive file cache, like v1.
pub fn usage(dir: &Path) -> Result<u64, SysError> {
    let current = fs::read_u64(dir, "memory.current")?;
    let inactive = fs::keyed(&fs::read(dir, "memory.stat")?, "inactive_file").unwrap_or(0);
    Ok(current.saturating_sub(inactive))
}

fn max_value(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_owned(), |b| b.to_string())
}

/// Set (or with `None` clear) the ceiling `memory.max`.
pub fn set_max(dir: &Path, bytes: Option<u64>) -> Result<Written, SysError> {
    fs::write(dir, "memory.max", &max_value(bytes))
}

/// Set (or clear) the throttle point `memory.high`.
pub fn set_high(dir: &Path, bytes: Option<u64>) -> Result<Written, SysError> {
    fs::write(dir, "memory.high", &max_value(bytes))
}

/// `memory.events` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Times usage went over `memory.high`.
    pub high: u64,
    /// Times usage hit `memory.max`.
    pub max: u64,
    /// OOM situations.
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
}

/// Parse `memory.events`.
pub fn parse_events(text: &str) -> Events {
    let k = |key| fs::keyed(text, key).unwrap_or(0);
    Events { high: k("high"), max: k("max"), oom: k("oom"), oom_kill: k("oom_kill") }
}

/// Read `memory.events`.
pub fn events(dir: &Path) -> Result<Events, SysError> {
    Ok(parse_events(&fs::read(dir, "memory.events")?))
}

/// The OOM counters of a cgroup from `memory.events.local` (this cgroup's own
/// events; `memory.events` on kernels before 5.2): `oom_kill`, `oom` (the
/// OOM killer invoked at this cgroup's own `memory.max`), `memory.peak`
/// (kernels >= 5.19) and `memory.max`.
pub fn oom_counters(dir: &Path) -> Result<OomCounters, SysError> {
    let file = if fs::has(dir, "memory.events.local") { "memory.events.local" } else { "memory.events" };
    let e = parse_events(&fs::read(dir, file)?);
    let max = fs::read(dir, "memory.max")?;
    let limit = match max.trim() {
        "max" => None,
        v => Some(v.parse().map_err(|_| SysError::Parse { path: dir.join("memory.max"), problem: format!("not a number: {v:?}") })?),
    };
    let peak = if fs::has(dir, "memory.peak") { Some(fs::read_u64(dir, "memory.peak")?) } else { None };
    Ok(OomCounters { oom_kills: e.oom_kill, limit_hits: e.oom, peak, limit })
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_parse() {
        let e = super::parse_events("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        assert_eq!(e, super::Events { high: 12, max: 3, oom: 1, oom_kill: 1 });
    }
}
