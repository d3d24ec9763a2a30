//! Reading and writing single cgroup files, with the path and value in every error.

use crate::error::SysError;
use std::path::{Path, PathBuf};

/// A value written to a cgroup file: what the kernel accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The file.
    pub path: PathBuf,
    /// The value.
    pub value: String,
}

/// Write `value` to `dir/file`.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<Written, SysError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| SysError::Write { path: path.clone(), value: value.to_owned(), source })?;
    Ok(Written { path, value: value.to_owned() })
}

/// Read `dir/file` as text.
pub fn read(dir: &Path, file: &str) -> Result<String, SysError> {
    crate::error::read(&dir.join(file))
}

/// Read `dir/file` as one unsigned number.
pub fn read_u64(dir: &Path, file: &str) -> Result<u64, SysError> {
    let path = dir.join(file);
    let text = crate::error::read(&path)?;
    text.trim().parse().map_err(|_| SysError::Parse { path, problem: format!("expected a number, got {:?}", text.trim()) })
}

/// The value of `key` in a flat-keyed file (`key value` lines, such as
/// `memory.stat`, `cpu.stat`, `memory.events`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether a file exists in `dir`.
pub fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// The pids listed in `dir/cgroup.procs`.
pub fn procs(dir: &Path) -> Result<Vec<u32>, SysError> {
    let path = dir.join("cgroup.procs");
    let text = crate::error::read(&path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse().map_err(|_| SysError::Parse { path: path.clone(), problem: format!("bad pid {l:?}") }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        let stat = "cache 10\nrss 20\ninactive_file 4096\ntotal_inactive_file 8192\n";
        assert_eq!(keyed(stat, "inactive_file"), Some(4096));
        assert_eq!(keyed(stat, "total_inactive_file"), Some(8192));
        assert_eq!(keyed(stat, "nope"), None);
    }

    #[test]
    fn errors_carry_path_and_value() {
        let t = tempfile::tempdir().unwrap();
        let e = write(&t.path().join("missing"), "memory.max", "1024").unwrap_err().to_string();
        assert!(e.contains("cannot write \"1024\" to") && e.contains("missing/memory.max"), "{e}");
        std::fs::write(t.path().join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(procs(t.path()).unwrap(), [12, 34]);
        std::fs::write(t.path().join("x"), "abc").unwrap();
        assert!(read_u64(t.path(), "x").unwrap_err().to_string().contains("\"abc\""));
    }
}
