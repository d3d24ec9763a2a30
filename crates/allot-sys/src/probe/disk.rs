//! Workspace disk usage: [`disk_usage`] in one walk, [`DiskWalk`] a bounded number of entries per call.

use crate::error::SysError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes stored under `dir` (allocated blocks; no symlinks followed; other
/// filesystems not entered; a file with several hard links counted once), in
/// one walk of the whole tree. The governor uses [`DiskWalk`], which bounds
/// the cost of one call.
pub fn disk_usage(dir: &Path) -> Result<u64, SysError> {
    let mut w = DiskWalk::new(dir.to_path_buf());
    loop {
        if let Some(total) = w.step(usize::MAX)? {
            return Ok(total);
        }
    }
}

/// A workspace's disk usage, walked at most a given number of entries per
/// call ([`DiskWalk::step`]): a large tree is measured over several calls
/// (one open directory per level of the walk is kept between them), and
/// each completed pass gives the total, measured the way [`disk_usage`]
/// measures it. Then the next call starts a new pass.
#[derive(Debug)]
pub struct DiskWalk {
    root: PathBuf,
    /// The device of the root: other filesystems mounted beneath are not entered.
    dev: Option<u64>,
    /// Directories still to read, and the one being read.
    stack: Vec<PathBuf>,
    current: Option<std::fs::ReadDir>,
    /// Blocks counted so far in this pass, in bytes.
    partial: u64,
    /// Inodes with several links seen in this pass.
    linked: std::collections::HashSet<u64>,
    /// Whether a pass is under way.
    walking: bool,
}

impl DiskWalk {
    /// A walk of the tree under `root` (no pass started yet).
    pub fn new(root: PathBuf) -> Self {
        DiskWalk { root, dev: None, stack: Vec::new(), current: None, partial: 0, linked: std::collections::HashSet::new(), walking: false }
    }

    /// The directory measured.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Look at up to `budget` entries (at least one); the total in bytes when
    /// this call finished a pass. An error when the root itself cannot be read
    /// (entries that vanish or cannot be read during the walk are skipped).
    pub fn step(&mut self, budget: usize) -> Result<Option<u64>, SysError> {
        if !self.walking {
            let meta = std::fs::symlink_metadata(&self.root).map_err(|source| SysError::Read { path: self.root.clone(), source })?;
            if !meta.is_dir() {
                let source = std::io::Error::other("not a directory");
                return Err(SysError::Read { path: self.root.clone(), source });
            }
            self.dev = Some(meta.dev());
            self.stack = vec![self.root.clone()];
            self.current = None;
            self.partial = 0;
            self.linked.clear();
            self.walking = true;
        }
        let mut left = budget.max(1);
        while left > 0 {
            let Some(rd) = self.current.as_mut() else {
                match self.stack.pop() {
                    Some(d) => self.current = std::fs::read_dir(&d).ok(),
                    None => {
                        self.walking = false;
                        return Ok(Some(self.partial));
                    }
                }
                continue;
            };
            match rd.next() {
                None => self.current = None,
                Some(Err(_)) => left -= 1,
                Some(Ok(e)) => {
                    left -= 1;
                    let Ok(m) = e.metadata() else { continue };
                    if Some(m.dev()) != self.dev {
                        continue;
                    }
                    if m.is_dir() {
                        self.stack.push(e.path());
                    } else if m.nlink() > 1 && !self.linked.insert(m.ino()) {
                        continue;
                    }
                    self.partial = self.partial.saturating_add(m.blocks().saturating_mul(512));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_walk_spread_over_calls_finds_what_one_walk_finds() {
        let t = tempfile::tempdir().unwrap();
        for d in 0..5 {
            let dir = t.path().join(format!("d{d}/inner"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                std::fs::write(dir.join(format!("f{f}")), vec![7u8; 5000 * (f + 1)]).unwrap();
            }
        }
        // A hard link is counted once.
        std::fs::hard_link(t.path().join("d0/inner/f19"), t.path().join("d0/link")).unwrap();
        let whole = disk_usage(t.path()).unwrap();
        let mut w = DiskWalk::new(t.path().to_path_buf());
        let mut calls = 0;
        let total = loop {
            calls += 1;
            if let Some(total) = w.step(7).unwrap() {
                break total;
            }
        };
        assert_eq!(total, whole);
        assert!(calls > 15, "7 entries a call over 111 entries: {calls} calls");
        std::fs::write(t.path().join("more"), vec![1u8; 1 << 20]).unwrap();
        let again = loop {
            if let Some(total) = w.step(1000).unwrap() {
                break total;
            }
        };
        assert!(again >= whole + (1 << 20), "a new pass sees the new file: {again} after {whole}");
        let missing = DiskWalk::new(t.path().join("nope")).step(10).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
