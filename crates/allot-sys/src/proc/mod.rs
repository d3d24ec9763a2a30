//! `/proc`: parsers for per-process files (tested on fixture text) and thin
//! readers that take the procfs root.

pub mod fds;
pub mod parse;
pub mod sockets;
pub mod tree;

use std::path::Path;

/// `/proc/<pid>/stat` of one process, parsed; `None` when it is gone or does not parse.
pub fn stat(proc_root: &Path, pid: u32) -> Option<parse::Stat> {
    let bytes = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse::stat(&bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_of_this_process_and_of_none() {
        let me = std::process::id();
        let s = super::stat(std::path::Path::new("/proc"), me).expect("our own stat");
        assert!(s.starttime > 0);
        assert!(super::stat(std::path::Path::new("/proc"), u32::MAX - 7).is_none());
    }
}
