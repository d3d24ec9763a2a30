//! An exclusive advisory lock on a file (`flock`, taken without waiting)
//! that removes its file when released, so lock files do not pile up.
//!
//! The holder writes its pid into the file and unlinks the file while it
//! still holds the lock. An acquirer may have opened the file just before
//! that unlink and get the lock on the unlinked inode once the holder
//! closes it; so after getting the lock it checks that the path still
//! names the inode it locked (fstat of its descriptor against stat of the
//! path) and, if not, lets go and tries again on whatever the path names now.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many times an acquirer starts over after finding the file replaced
/// under it (each time another process released and removed it).
const ATTEMPTS: usize = 100;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file description holds it; the pid written in the file, if readable.
    #[error("{} is locked by another process (pid {})", path.display(), pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as written in the file.
        pid: Option<u32>,
    },
    /// The file could not be opened, locked, checked or written.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// A held lock; dropping it removes the file, then releases the lock.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Take the lock on `path` (created if missing) without waiting, and write our pid into it.
    pub fn acquire(path: &Path) -> Result<LockFile, LockError> {
        acquire_with(path, || {})
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `file` is the file `path` names now.
fn same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    let ours = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == ours.dev() && now.ino() == ours.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`LockFile::acquire`], calling `between` after each open and before its
/// `flock` (tests use it to release the lock in that window).
fn acquire_with(path: &Path, mut between: impl FnMut()) -> Result<LockFile, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    for _ in 0..ATTEMPTS {
        // Not truncated on open: the holder's pid stays readable until we hold the lock.
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        between();
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held { path: path.to_path_buf(), pid: text.trim().parse().ok() });
            }
            Err(e) => return Err(io(e.into())),
        }
        // Locked, but perhaps a file its holder removed before we locked it: start over.
        if !same_file(&file, path).map_err(io)? {
            continue;
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        return Ok(LockFile { file, path: path.to_path_buf() });
    }
    Err(io(std::io::Error::other(format!("the file was replaced {ATTEMPTS} times while locking it"))))
}

impl Drop for LockFile {
    /// Remove the file while the lock is still held (only if the path still
    /// names it), then release the lock by closing it.
    fn drop(&mut self) {
        if same_file(&self.file, &self.path).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn held_names_the_holder_and_release_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.lock");
        let held = LockFile::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        match LockFile::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a second lock while held: {other:?}"),
        }
        drop(held);
        assert!(!path.exists(), "released: the file is removed");
        // The next one after it creates the file again, and removes it in turn.
        let next = LockFile::acquire(&path).unwrap();
        assert!(path.exists());
        drop(next);
        assert!(!path.exists());
    }

    #[test]
    fn an_acquirer_that_opened_the_file_before_its_removal_takes_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.lock");
        let mut first = Some(LockFile::acquire(&path).unwrap());
        let mut opened = 0;
        // The holder releases (unlinks and closes) right after the second opened the old file.
        let second = acquire_with(&path, || {
            opened += 1;
            first.take();
        })
        .unwrap();
        assert_eq!(opened, 2, "the first attempt locked the removed file and started over");
        assert!(same_file(&second.file, &path).unwrap(), "the lock held is on the file the path names");
        // A third is refused while the second holds it: the lock is exclusive on the live file.
        assert!(matches!(LockFile::acquire(&path), Err(LockError::Held { .. })));
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn threads_locking_and_releasing_in_a_loop_never_hold_it_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("root.lock"));
        let holders = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, holders, taken, start) = (Arc::clone(&path), Arc::clone(&holders), Arc::clone(&taken), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..2_000 {
                        match LockFile::acquire(&path) {
                            Ok(l) => {
                                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                                taken.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                holders.fetch_sub(1, Ordering::SeqCst);
                                drop(l);
                            }
                            Err(LockError::Held { .. }) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(taken.load(Ordering::SeqCst) > 0);
        assert!(!path.exists(), "the last holder removed it");
    }
}
