//! Host spec arithmetic (SPEC section 3): total, reserved, allocatable and
//! available capacity per resource.

use crate::resource::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Measured or configured capacity of the host, in internal units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTotals {
    /// Bytes: MemTotal, or allot's own cgroup limit if lower.
    pub memory: u64,
    /// Millicores: logical CPUs x 1000, or allot's own cgroup cpu limit.
    pub cpu: u64,
    /// Processes: min(pid_max, threads-max), or allot's own pids.max.
    pub processes: u64,
    /// Open files: configured (default 10,000 as in the sketch).
    pub files: u64,
    /// Bytes per second: configured link capacity (default 1 Gbit/s).
    pub network: u64,
}

/// Default open-files capacity (the sketch's figure).
pub const DEFAULT_FILES: u64 = 10_000;
/// Default network capacity: 1 Gbit/s in bytes per second.
pub const DEFAULT_NETWORK: u64 = 125_000_000;

/// Percent of each resource reserved for the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservations {
    /// Memory (default 25).
    pub memory: u8,
    /// Cpu (default 20).
    pub cpu: u8,
    /// Processes (default 10).
    pub processes: u8,
    /// Files (default 10).
    pub files: u8,
    /// Network (default 10).
    pub network: u8,
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations { memory: 25, cpu: 20, processes: 10, files: 10, network: 10 }
    }
}

/// One row of the host table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// What the host has.
    pub total: u64,
    /// What is kept for the system.
    pub reserved: u64,
    /// `total - reserved`: what agents may be given.
    pub allocatable: u64,
}

/// The host table: one row per resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Rows by resource.
    pub rows: BTreeMap<Resource, HostRow>,
}

/// A reservation above 100 %.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reserved.{resource}: {percent} is not a percentage in 0..100")]
pub struct ReservationError {
    /// The resource.
    pub resource: Resource,
    /// The value given.
    pub percent: u8,
}

impl HostSpec {
    /// Build the table from totals and reservations.
    pub fn new(totals: &HostTotals, reserved: &Reservations) -> Result<Self, ReservationError> {
        let pairs = [
            (Resource::Memory, totals.memory, reserved.memory),
            (Resource::Cpu, totals.cpu, reserved.cpu),
            (Resource::Processes, totals.processes, reserved.processes),
            (Resource::Files, totals.files, reserved.files),
            (Resource::Network, totals.network, reserved.network),
        ];
        let mut rows = BTreeMap::new();
        for (resource, total, percent) in pairs {
            if percent > 100 {
                return Err(ReservationError { resource, percent });
            }
            let reserved = (u128::from(total) * u128::from(percent) / 100) as u64;
            rows.insert(resource, HostRow { total, reserved, allocatable: total - reserved });
        }
        Ok(HostSpec { rows })
    }

    /// `allocatable - usage` per resource, never below zero.
    pub fn available(&self, usage: &BTreeMap<Resource, u64>) -> BTreeMap<Resource, u64> {
        self.rows.iter().map(|(r, row)| (r.clone(), row.allocatable.saturating_sub(usage.get(r).copied().unwrap_or(0)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_allocatable_follow_the_sketch_percentages() {
        let totals = HostTotals { memory: 8 << 30, cpu: 2000, processes: 4_194_304, files: DEFAULT_FILES, network: DEFAULT_NETWORK };
        let spec = HostSpec::new(&totals, &Reservations::default()).unwrap();
        assert_eq!(spec.rows[&Resource::Memory], HostRow { total: 8 << 30, reserved: 2 << 30, allocatable: 6 << 30 });
        assert_eq!(spec.rows[&Resource::Cpu], HostRow { total: 2000, reserved: 400, allocatable: 1600 });
        assert_eq!(spec.rows[&Resource::Files], HostRow { total: 10_000, reserved: 1000, allocatable: 9000 });
        assert_eq!(spec.rows[&Resource::Network].allocatable, 112_500_000);
        let usage = BTreeMap::from([(Resource::Cpu, 1000), (Resource::Files, 20_000)]);
        let avail = spec.available(&usage);
        assert_eq!(avail[&Resource::Cpu], 600);
        assert_eq!(avail[&Resource::Files], 0, "never negative");
        assert_eq!(avail[&Resource::Memory], 6 << 30);
    }

    #[test]
    fn reservations_over_100_percent_are_refused() {
        let totals = HostTotals { memory: 1, cpu: 1, processes: 1, files: 1, network: 1 };
        let r = Reservations { cpu: 120, ..Default::default() };
        assert_eq!(HostSpec::new(&totals, &r).unwrap_err().to_string(), "reserved.cpu: 120 is not a percentage in 0..100");
    }
}
