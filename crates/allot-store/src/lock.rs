//! The exclusive lock on a state database opened for writing: an advisory
//! `flock` on `<state>.lock` beside it, taken without waiting and held for
//! the store's life (the kernel drops it when the process ends, also when it
//! is killed). The holder writes its pid into the file, so the second opener
//! can say who holds it. Readers (`allot history`, `events`, `report`) take
//! no lock: SQLite's WAL lets them read beside the writer.

use crate::StoreError;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file of a state database: its name with `.lock` appended.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".lock");
    db.with_file_name(name)
}

/// Take the lock of `db` (exclusive, non-blocking) and write our pid into it.
pub(crate) fn acquire(db: &Path) -> Result<File, StoreError> {
    let path = lock_path(db);
    let io = |source| StoreError::Lock { path: path.clone(), source };
    // Not truncated on open: the holder's pid stays readable until we hold the lock.
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::Locked { path: db.to_path_buf(), pid: text.trim().parse().ok() });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}
