//! Who owns a loopback TCP connection: the uid and socket inode of the other
//! end, from `/proc/net/tcp` and `/proc/net/tcp6` (the table `identd`
//! reads), and the process holding that socket (a scan of `/proc/*/fd`).
//! The daemon's TCP listener uses them to count a local caller under its
//! uid and to treat an agent's process as that agent even with the token;
//! `allot ui --tcp` forwards only this user's processes that are no agent's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// An address of the kernel's table: `0100007F:1F90` (IPv4, the 32-bit
/// word in host order as hex) or 32 hex digits for IPv6 (four such words).
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(host_word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&host_word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One 32-bit word of the table, printed in host order: its bytes in memory order.
fn host_word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// The owner of a socket: its uid and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    /// The uid that created it.
    pub uid: u32,
    /// Its inode (`socket:[INODE]` in the holder's `/proc/PID/fd`).
    pub inode: u64,
}

/// The owner of the socket whose local address is `local` and remote `remote`, in one table's text.
pub fn owner_in(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<SocketOwner> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (l, r) = (parse_addr(f.get(1)?)?, parse_addr(f.get(2)?)?);
        if !(same(l, local) && same(r, remote)) {
            return None;
        }
        Some(SocketOwner { uid: f.get(7)?.parse().ok()?, inode: f.get(9)?.parse().ok()? })
    })
}

/// Equal, an IPv4-mapped IPv6 address counting as its IPv4 address.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
        IpAddr::V4(_) => s,
    };
    canon(a) == canon(b)
}

/// The uid of the process end of a TCP connection on this machine: the socket
/// whose local address is `peer` and remote `me` (`None`: not found, such as
/// a connection from another host).
pub fn peer_owner(proc: &Path, peer: SocketAddr, me: SocketAddr) -> std::io::Result<Option<SocketOwner>> {
    for table in ["net/tcp", "net/tcp6"] {
        let text = match std::fs::read_to_string(proc.join(table)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", proc.join(table).display()))),
        };
        if let Some(owner) = owner_in(&text, peer, me) {
            return Ok(Some(owner));
        }
    }
    Ok(None)
}

/// A process holding the socket `inode` (the lowest pid among those that
/// do; `None` when no process does, or none this process may look into).
/// Reads every process's descriptor links: a few milliseconds on a busy host.
pub fn pid_of_socket(proc: &Path, inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    let mut pids: Vec<u32> = std::fs::read_dir(proc).ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else { return false };
        fds.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_give_the_owner_of_a_connection() {
        // Little-endian host: 127.0.0.1 is printed 0100007F.
        if cfg!(target_endian = "big") {
            return;
        }
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1 0 100 0 0 10 0\n\
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 1001 1 0 20 4 30 10 -1\n";
        let listener: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!());
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(owner_in(table, client, listener), Some(SocketOwner { uid: 1001, inode: 1001 }));
        assert_eq!(owner_in(table, listener, client), None);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 7 1\n";
        let l6: SocketAddr = "[::1]:8080".parse().unwrap_or_else(|_| unreachable!());
        let c6: SocketAddr = "[::1]:54321".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(owner_in(v6, c6, l6), Some(SocketOwner { uid: 1002, inode: 7 }));
        assert_eq!(owner_in("garbage\nnot a table\n", c6, l6), None);
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_loopback_connection() {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else { return };
        let me = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = std::net::TcpStream::connect(me).unwrap_or_else(|e| panic!("{e}"));
        let peer = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let proc = Path::new("/proc");
        let owner = peer_owner(proc, peer, me).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no owner of {peer}"));
        assert_eq!(owner.uid, rustix::process::geteuid().as_raw());
        assert_eq!(pid_of_socket(proc, owner.inode), Some(std::process::id()), "this process holds the client socket");
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(peer_owner(proc, nobody, me).unwrap_or_else(|e| panic!("{e}")), None);
        assert_eq!(pid_of_socket(proc, u64::MAX), None);
        drop(client);
    }
}
