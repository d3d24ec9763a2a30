//! cgroup v2: the core files (freeze, kill, events) and the memory, cpu and
//! io controllers, one file each; pids shares its files with v1.

pub mod core;
pub mod cpu;
pub mod io;
pub mod memory;
pub use super::v1::pids;
