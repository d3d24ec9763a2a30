//! v2 core files, present in every v2 cgroup even without controllers:
//! `cgroup.freeze`, `cgroup.kill`, `cgroup.events`, `cgroup.subtree_control`.

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// `cgroup.events`: whether the cgroup has processes and whether it is frozen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// `populated 1`.
    pub populated: bool,
    /// `frozen 1`.
    pub frozen: bool,
}

/// Parse `cgroup.events`.
pub fn parse_events(text: &str) -> Events {
    Events { populated: fs::keyed(text, "populated") == Some(1), frozen: fs::keyed(text, "frozen") == Some(1) }
}

/// Read `cgroup.events`.
pub fn events(dir: &Path) -> Result<Events, SysError> {
    Ok(parse_events(&fs::read(dir, "cgroup.events")?))
}

/// Ask the kernel to freeze the cgroup (`cgroup.freeze` 1); it is frozen
/// once [`is_frozen`] says so. Does not wait.
pub fn request_freeze(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "cgroup.freeze", "1")
}

/// Whether `cgroup.events` says `frozen 1`.
pub fn is_frozen(dir: &Path) -> Result<bool, SysError> {
    Ok(events(dir)?.frozen)
}

/// Thaw.
pub fn thaw(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "cgroup.freeze", "0")
}

/// Kill every process in the cgroup and its descendants, race-free (Linux >= 5.14).
/// Does not wait: the cgroup is empty once `cgroup.events` says `populated 0`.
pub fn kill(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "cgroup.kill", "1")
}

/// The controllers available to the cgroup's children (`cgroup.controllers`).
pub fn controllers(dir: &Path) -> Result<Vec<String>, SysError> {
    Ok(fs::read(dir, "cgroup.controllers")?.split_whitespace().map(str::to_owned).collect())
}

/// Enable controllers for the cgroup's children (`+memory +cpu ...`).
pub fn enable(dir: &Path, controllers: &[String]) -> Result<Option<Written>, SysError> {
    if controllers.is_empty() {
        return Ok(None);
    }
    let v: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    fs::write(dir, "cgroup.subtree_control", &v.join(" ")).map(Some)
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_parse() {
        let e = super::parse_events("populated 1\nfrozen 0\n");
        assert!(e.populated && !e.frozen);
        assert_eq!(super::parse_events(""), super::Events::default());
    }
}
