//! v1 freezer: `freezer.state` FROZEN / THAWED.

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;

/// Ask the kernel to freeze the cgroup (write FROZEN). The state reads
/// FREEZING until every task is frozen; see [`is_frozen`]. Does not wait.
pub fn request_freeze(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "freezer.state", "FROZEN")
}

/// Whether the kernel reports FROZEN (reading the state also makes the
/// kernel check whether a FREEZING cgroup has become frozen).
pub fn is_frozen(dir: &Path) -> Result<bool, SysError> {
    Ok(state(dir)? == "FROZEN")
}

/// Thaw.
pub fn thaw(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "freezer.state", "THAWED")
}

/// The current state (FROZEN, FREEZING or THAWED).
pub fn state(dir: &Path) -> Result<String, SysError> {
    Ok(fs::read(dir, "freezer.state")?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_writes_and_is_frozen_reads_the_state() {
        let t = tempfile::tempdir().unwrap();
        let w = request_freeze(t.path()).unwrap();
        assert_eq!((w.path, w.value.as_str()), (t.path().join("freezer.state"), "FROZEN"));
        assert!(is_frozen(t.path()).unwrap());
        std::fs::write(t.path().join("freezer.state"), "FREEZING\n").unwrap();
        assert!(!is_frozen(t.path()).unwrap());
        assert_eq!(state(t.path()).unwrap(), "FREEZING");
        thaw(t.path()).unwrap();
        assert_eq!(state(t.path()).unwrap(), "THAWED");
    }
}
