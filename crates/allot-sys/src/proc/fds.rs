//! Counting a process's open file descriptors and sockets.

use std::path::Path;

/// Open fds of `pid`: `st_size` of `/proc/<pid>/fd` (the count, on Linux >=
/// 6.2, in about 0.5 us), else a directory listing. `None` if the process is
/// gone or unreadable.
pub fn count(proc_root: &Path, pid: u32) -> Option<u64> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let size = std::fs::metadata(&dir).ok()?.len();
    if size > 0 {
        return Some(size);
    }
    Some(std::fs::read_dir(&dir).ok()?.count() as u64)
}

/// Open sockets of `pid`: fds whose link reads `socket:[...]`.
pub fn sockets(proc_root: &Path, pid: u32) -> Option<u64> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            if target.as_os_str().as_encoded_bytes().starts_with(b"socket:") {
                n += 1;
            }
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_our_own_fds_and_sockets() {
        let proc = Path::new("/proc");
        let me = std::process::id();
        let before = count(proc, me).unwrap();
        let socks_before = sockets(proc, me).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        // Other test threads may open files meanwhile: at least two more.
        assert!(count(proc, me).unwrap() >= before + 2);
        assert!(sockets(proc, me).unwrap() > socks_before);
        drop((l, f));
        assert_eq!(count(proc, u32::MAX), None);
    }
}
