//! allot-sys: everything allot learns from and does to the Linux kernel.
//!
//! Parsing is kept apart from I/O: each parser takes text and is tested on
//! fixtures; the thin readers take the filesystem roots ([`Roots`]) as a
//! parameter, so tests run against temp trees as well as the real kernel.
//!
//! This first part holds cgroup discovery (which hierarchies exist and where
//! allot's own cgroup is) and the host spec (SPEC section 3).

pub mod actuate;
pub mod cgroup;
pub mod error;
pub mod host;
pub mod lockfile;
pub mod notify;
pub mod peer;
pub mod probe;
pub mod proc;
pub mod signal;
pub mod spawn;

pub use error::SysError;

use std::path::{Path, PathBuf};

/// Where the kernel's filesystems are: `/` and `/proc` on a real host, a
/// temp dir in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Prefix for absolute paths such as mount points and `/sys/...`.
    pub root: PathBuf,
    /// The procfs of the process being looked at (`/proc`).
    pub proc: PathBuf,
}

impl Roots {
    /// The real host.
    pub fn host() -> Self {
        Roots { root: PathBuf::from("/"), proc: PathBuf::from("/proc") }
    }

    /// A fake tree: `dir` stands for `/`, `dir/proc` for `/proc`.
    pub fn under(dir: &Path) -> Self {
        Roots { root: dir.to_path_buf(), proc: dir.join("proc") }
    }

    /// An absolute path of the host, under this root.
    pub fn path(&self, absolute: &Path) -> PathBuf {
        self.root.join(absolute.strip_prefix("/").unwrap_or(absolute))
    }
}
