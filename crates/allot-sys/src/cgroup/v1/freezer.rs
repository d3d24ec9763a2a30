//! v1 freezer: `freezer.state` FROZEN / THAWED.

use crate::cgroup::fs::{self, Written};
use crate::error::SysError;
use std::path::Path;
use std::time::{Duration, Instant};

/// Freeze and wait (up to `timeout`) until the kernel reports FROZEN.
pub fn freeze(dir: &Path, timeout: Duration) -> Result<Written, SysError> {
    let w = fs::write(dir, "freezer.state", "FROZEN")?;
    wait_for(dir, "FROZEN", timeout)?;
    Ok(w)
}

/// Thaw.
pub fn thaw(dir: &Path) -> Result<Written, SysError> {
    fs::write(dir, "freezer.state", "THAWED")
}

/// The current state (FROZEN, FREEZING or THAWED).
pub fn state(dir: &Path) -> Result<String, SysError> {
    Ok(fs::read(dir, "freezer.state")?.trim().to_owned())
}

fn wait_for(dir: &Path, want: &str, timeout: Duration) -> Result<(), SysError> {
    let start = Instant::now();
    loop {
        let s = state(dir)?;
        if s == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(SysError::Parse {
                path: dir.join("freezer.state"),
                problem: format!("still {s} after {timeout:?}, wanted {want}"),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
