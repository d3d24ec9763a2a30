//! v1 blkio: bytes read and written (`blkio.throttle.io_service_bytes`).

use crate::cgroup::fs;
use crate::error::SysError;
use std::path::Path;

/// Sum of Read and Write bytes over all devices.
pub fn parse_service_bytes(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let (_dev, op, v) = (p.next()?, p.next()?, p.next()?);
            matches!(op, "Read" | "Write").then(|| v.parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// Bytes of block I/O done by the cgroup so far.
pub fn io_bytes(dir: &Path) -> Result<u64, SysError> {
    Ok(parse_service_bytes(&fs::read(dir, "blkio.throttle.io_service_bytes")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_reads_and_writes() {
        let t = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 100\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n";
        assert_eq!(super::parse_service_bytes(t), 12289);
    }
}
