//! Who owns a loopback TCP connection: the uid and socket inode of the other
//! end, asked of the kernel for that one socket by its addresses (netlink
//! `sock_diag`, as `ss` does: a lookup, not a read of the whole
//! `/proc/net/tcp` table, which any local user can make grow), and the
//! process holding that socket (a scan of `/proc/*/fd`). The table's text
//! form is parsed too ([`owner_in`]), for tests against the netlink answer.
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

/// The owner of the process end of a TCP connection on this machine: the
/// socket whose local address is `peer` and remote `me` (`None`: no such
/// socket, such as a connection from another host, or one already closed).
/// An IPv4-mapped address (a listener on `[::]`) is looked up as IPv4 first.
pub fn peer_owner(peer: SocketAddr, me: SocketAddr) -> std::io::Result<Option<SocketOwner>> {
    let (p4, m4) = (canonical(peer), canonical(me));
    if p4.is_ipv4() && m4.is_ipv4() {
        if let Some(o) = diag::lookup(p4, m4)? {
            return Ok(Some(o));
        }
    }
    if peer.is_ipv6() && me.is_ipv6() {
        return diag::lookup(peer, me);
    }
    Ok(None)
}

/// An IPv4-mapped IPv6 address as its IPv4 address.
fn canonical(s: SocketAddr) -> SocketAddr {
    match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
        IpAddr::V4(_) => s,
    }
}

/// Whether `ip` is loopback, an IPv4-mapped loopback address included.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// One socket's owner by netlink `sock_diag` (`SOCK_DIAG_BY_FAMILY`, an exact lookup by addresses).
mod diag {
    use super::SocketOwner;
    use std::net::{IpAddr, SocketAddr};

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NETLINK_SOCK_DIAG: libc::c_int = 4;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct NlMsgHdr {
        len: u32,
        ty: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct SockId {
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u8; 16],
        dst: [u8; 16],
        ifindex: u32,
        cookie: [u32; 2],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct ReqV2 {
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Request {
        hdr: NlMsgHdr,
        req: ReqV2,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Msg {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SockId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    fn octets(ip: IpAddr) -> [u8; 16] {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        b
    }

    /// The owner of the TCP socket with local address `local` and remote `remote` (both of one family).
    pub(super) fn lookup(local: SocketAddr, remote: SocketAddr) -> std::io::Result<Option<SocketOwner>> {
        let family = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let req = Request {
            hdr: NlMsgHdr {
                len: std::mem::size_of::<Request>() as u32,
                ty: SOCK_DIAG_BY_FAMILY,
                flags: libc::NLM_F_REQUEST as u16,
                seq: 1,
                pid: 0,
            },
            req: ReqV2 {
                family: family as u8,
                protocol: libc::IPPROTO_TCP as u8,
                ext: 0,
                pad: 0,
                states: u32::MAX,
                id: SockId {
                    sport: local.port().to_be_bytes(),
                    dport: remote.port().to_be_bytes(),
                    src: octets(local.ip()),
                    dst: octets(remote.ip()),
                    ifindex: 0,
                    // INET_DIAG_NOCOOKIE: any socket with these addresses.
                    cookie: [u32::MAX; 2],
                },
            },
        };
        // SAFETY: a plain socket(2) call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: `addr` is a zeroed sockaddr_nl (the kernel as destination); `req` is a
        // repr(C) value whose size is given; both outlive the call.
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                raw,
                (&raw const req).cast(),
                std::mem::size_of::<Request>(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        let hdr_len = std::mem::size_of::<NlMsgHdr>();
        if n < hdr_len {
            return Err(std::io::Error::other("sock_diag: short answer"));
        }
        // SAFETY: `buf` holds at least a header's bytes; read_unaligned copies them out.
        let hdr: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        if hdr.ty == NLMSG_ERROR {
            let code = buf.get(hdr_len..hdr_len + 4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            return match -code {
                0 | libc::ENOENT => Ok(None),
                e => Err(std::io::Error::from_raw_os_error(e)),
            };
        }
        if hdr.ty != SOCK_DIAG_BY_FAMILY || n < hdr_len + std::mem::size_of::<Msg>() {
            return Err(std::io::Error::other(format!("sock_diag: unexpected answer type {} of {n} bytes", hdr.ty)));
        }
        // SAFETY: `buf` holds a whole `Msg` after the header (checked above).
        let msg: Msg = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(hdr_len).cast()) };
        Ok(Some(SocketOwner { uid: msg.uid, inode: u64::from(msg.inode) }))
    }
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
        let owner = peer_owner(peer, me).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no owner of {peer}"));
        assert_eq!(owner.uid, rustix::process::geteuid().as_raw());
        let table = std::fs::read_to_string(proc.join("net/tcp")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(owner_in(&table, peer, me), Some(owner), "netlink and /proc/net/tcp agree");
        assert_eq!(pid_of_socket(proc, owner.inode), Some(std::process::id()), "this process holds the client socket");
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(peer_owner(nobody, me).unwrap_or_else(|e| panic!("{e}")), None);
        // A dual-stack listener sees an IPv4 client as an IPv4-mapped address: the same owner.
        let mapped = |s: SocketAddr| match s.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
            IpAddr::V6(_) => s,
        };
        assert_eq!(peer_owner(mapped(peer), mapped(me)).unwrap_or_else(|e| panic!("{e}")), Some(owner));
        assert!(is_loopback(mapped(peer).ip()));
        assert_eq!(pid_of_socket(proc, u64::MAX), None);
        drop(client);
    }
}
