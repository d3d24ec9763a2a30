//! v2 io: bytes read and written (`io.stat`).

use crate::cgroup::fs;
use crate::error::SysError;
use std::path::Path;

/// Sum of `rbytes=` and `wbytes=` over all devices.
pub fn parse_stat(text: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|f| f.strip_prefix("rbytes=").or_else(|| f.strip_prefix("wbytes=")))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Bytes of block I/O done so far.
pub fn io_bytes(dir: &Path) -> Result<u64, SysError> {
    Ok(parse_stat(&fs::read(dir, "io.stat")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_bytes() {
        assert_eq!(super::parse_stat("8:0 rbytes=100 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=0\n"), 121);
    }
}
