//! A socket peer pinned to its process, not to its pid number.
//!
//! `SO_PEERCRED` gives the pid of the process that connected; by the time a
//! request is served that process may be gone and its pid reused by another
//! one (an agent's leader, say). [`PeerProcess::pin`] takes a pidfd of the
//! peer at accept (`SO_PEERPIDFD`, Linux 6.5+, which names the very process
//! that connected), or, where the kernel lacks it, the pid's start time; and
//! [`PeerProcess::pid`] answers the pid only while that same process lives.

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `SO_PEERPIDFD` (asm-generic value; the libc crate does not name it yet).
const SO_PEERPIDFD: libc::c_int = 77;

/// How the peer's process is pinned.
#[derive(Debug)]
enum Pin {
    /// A pidfd of the process that connected.
    Fd(OwnedFd),
    /// The pid's start time (clock ticks since boot) when the connection was accepted.
    Start(u64),
}

/// The process at the other end of a Unix socket.
#[derive(Debug)]
pub struct PeerProcess {
    pid: u32,
    pin: Pin,
}

impl PeerProcess {
    /// Pin the peer of `sock`, whose credentials gave `pid`. `None` when the
    /// process cannot be pinned (it is already gone).
    pub fn pin(sock: BorrowedFd<'_>, pid: u32, proc_root: &std::path::Path) -> Option<PeerProcess> {
        if pid == 0 {
            return None;
        }
        if let Some(fd) = peer_pidfd(sock) {
            return Some(PeerProcess { pid, pin: Pin::Fd(fd) });
        }
        let start = crate::proc::stat(proc_root, pid)?.starttime;
        Some(PeerProcess { pid, pin: Pin::Start(start) })
    }

    /// Pin a process known by its pid alone (a TCP peer found through
    /// `/proc`): by its start time. `None` when it is already gone.
    pub fn pin_pid(pid: u32, proc_root: &std::path::Path) -> Option<PeerProcess> {
        if pid == 0 {
            return None;
        }
        let start = crate::proc::stat(proc_root, pid)?.starttime;
        Some(PeerProcess { pid, pin: Pin::Start(start) })
    }

    /// How it is pinned, for logs: `"pidfd"` or `"start time"`.
    pub fn method(&self) -> &'static str {
        match self.pin {
            Pin::Fd(_) => "pidfd",
            Pin::Start(_) => "start time",
        }
    }

    /// The peer's pid while the process that connected is alive (a zombie
    /// still holds its pid); `None` once it is gone, whatever now has its number.
    pub fn pid(&self, proc_root: &std::path::Path) -> Option<u32> {
        let alive = match &self.pin {
            Pin::Fd(fd) => pidfd_alive(fd),
            Pin::Start(start) => crate::proc::stat(proc_root, self.pid).is_some_and(|s| s.starttime == *start),
        };
        alive.then_some(self.pid)
    }
}

/// `getsockopt(SO_PEERPIDFD)`: `None` where the kernel does not have it.
fn peer_pidfd(sock: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given; the
    // socket descriptor is borrowed for the duration of the call.
    let rc = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut fd).cast(), &raw mut len) };
    if rc != 0 || fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the pidfd's process has not been reaped: `pidfd_send_signal(fd, 0)`.
fn pidfd_alive(fd: &OwnedFd) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists
    // (and whether we may signal it). The pointer argument may be null.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::os::unix::net::UnixListener;

    /// A child connects and exits: the pin sees it gone, whatever holds its pid later.
    #[test]
    fn a_peer_that_exits_is_no_longer_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.3)")
            .arg(&path)
            .spawn()
            .unwrap();
        let (conn, _) = l.accept().unwrap();
        let pid = child.id();
        let roots = crate::Roots::host();
        let p = PeerProcess::pin(conn.as_fd(), pid, &roots.proc).expect("pinned while alive");
        assert_eq!(p.pid(&roots.proc), Some(pid), "alive: its pid ({})", p.method());
        child.wait().unwrap();
        assert_eq!(p.pid(&roots.proc), None, "reaped: no pid ({})", p.method());
        drop(conn);
    }

    #[test]
    fn the_start_time_pin_works_without_pidfds() {
        let roots = crate::Roots::host();
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id();
        let start = crate::proc::stat(&roots.proc, pid).unwrap().starttime;
        let p = PeerProcess { pid, pin: Pin::Start(start) };
        assert_eq!(p.pid(&roots.proc), Some(pid));
        let other = PeerProcess { pid, pin: Pin::Start(start + 1) };
        assert_eq!(other.pid(&roots.proc), None, "another start time is another process");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(p.pid(&roots.proc), None);
    }
}
