//! Parsers for `/proc/<pid>/{stat,io}` and `/proc/<pid>/net/dev`, working on
//! bytes without allocating, so that hot sampling can reuse one buffer.

/// The fields of `/proc/<pid>/stat` allot uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Process state letter (R, S, D, T, Z, ...).
    pub state: u8,
    /// Parent pid.
    pub ppid: u32,
    /// User CPU time, in clock ticks.
    pub utime: u64,
    /// System CPU time, in clock ticks.
    pub stime: u64,
    /// Threads.
    pub num_threads: u64,
    /// Start time after boot, in clock ticks (with the pid, identifies a process).
    pub starttime: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

fn num(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Parse `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn stat(bytes: &[u8]) -> Option<Stat> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = bytes.get(close + 2..)?;
    // Field 3 (state) is index 0 here; field N is index N-3.
    let mut s = Stat::default();
    for (i, f) in rest.split(|&b| b == b' ').enumerate() {
        match i {
            0 => s.state = *f.first()?,
            1 => s.ppid = u32::try_from(num(f)?).ok()?,
            11 => s.utime = num(f)?,
            12 => s.stime = num(f)?,
            17 => s.num_threads = num(f)?,
            19 => s.starttime = num(f)?,
            21 => {
                s.rss_pages = num(f.strip_suffix(b"\n").unwrap_or(f)).unwrap_or(0);
                return Some(s);
            }
            _ => {}
        }
    }
    None
}

/// `read_bytes + write_bytes` from `/proc/<pid>/io` (block I/O actually done).
pub fn io_bytes(bytes: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    let mut found = false;
    for line in bytes.split(|&b| b == b'\n') {
        for key in [&b"read_bytes: "[..], &b"write_bytes: "[..]] {
            if let Some(v) = line.strip_prefix(key) {
                total = total.saturating_add(num(v)?);
                found = true;
            }
        }
    }
    found.then_some(total)
}

/// Received plus sent bytes over every interface but `lo` (`/proc/<pid>/net/dev`).
pub fn net_dev_bytes(text: &str) -> Option<u64> {
    let mut total = 0u64;
    for line in text.lines().skip(2) {
        let (iface, rest) = line.split_once(':')?;
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let rx: u64 = f.first()?.parse().ok()?;
        let tx: u64 = f.get(8)?.parse().ok()?;
        total = total.saturating_add(rx).saturating_add(tx);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAT: &[u8] = b"4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1201 0 0 0 37 12 0 0 20 0 3 0 987654 12345678 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_after_an_odd_comm() {
        let s = stat(STAT).unwrap();
        assert_eq!(s, Stat { state: b'S', ppid: 1, utime: 37, stime: 12, num_threads: 3, starttime: 987654, rss_pages: 2048 });
        assert_eq!(stat(b"12 (x) Z"), None, "truncated");
        assert_eq!(stat(b""), None);
    }

    #[test]
    fn io_and_net() {
        let io = b"rchar: 100\nwchar: 50\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(io_bytes(io), Some(12288));
        assert_eq!(io_bytes(b"rchar: 1\n"), None);
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0:  5000      50    0    0    0     0          0         0     7000      70    0    0    0     0       0          0\n";
        assert_eq!(net_dev_bytes(dev), Some(12000));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = stat(&bytes);
            let _ = io_bytes(&bytes);
            let _ = net_dev_bytes(&String::from_utf8_lossy(&bytes));
        }
    }
}
