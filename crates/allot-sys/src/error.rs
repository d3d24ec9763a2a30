//! Errors of the kernel boundary: each names the path and, for writes, the value.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An error reading, parsing or writing a kernel file.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the kernel answered.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// What the kernel answered.
        source: io::Error,
    },
    /// The operation is not available in this mode.
    #[error("{what} is not supported here: {why}")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// Why not.
        why: String,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// The call and its argument.
        call: String,
        /// What the kernel answered.
        source: io::Error,
    },
    /// A file's content did not parse.
    #[error("cannot parse {path}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The kernel did not finish in time what was asked of it (a freeze
    /// taking hold, a killed tree emptying).
    #[error("{what} did not finish within {waited:?}: {detail}")]
    Timeout {
        /// What was waited for ("freeze", "kill").
        what: &'static str,
        /// How long.
        waited: Duration,
        /// What was still outstanding ("processes [12, 13] still present").
        detail: String,
    },
}

/// Read a whole file as text, with the path in the error.
pub fn read(path: &std::path::Path) -> Result<String, SysError> {
    std::fs::read_to_string(path).map_err(|source| SysError::Read { path: path.to_path_buf(), source })
}
