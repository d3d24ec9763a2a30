//! cgroup v1 controllers, one file each; every function takes the cgroup directory.

pub mod blkio;
pub mod cpu;
pub mod freezer;
pub mod memory;
pub mod pids;
