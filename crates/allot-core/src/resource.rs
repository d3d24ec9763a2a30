//! Resource kinds (SPEC section 2) and the internal unit each is counted in.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The internal unit a resource is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Bytes (memory, disk).
    Bytes,
    /// Thousandths of one CPU core busy (cpu).
    Millicores,
    /// A plain count (processes, threads, files, connections).
    Count,
    /// Bytes per second (disk_io, network).
    BytesPerSecond,
    /// A count per time window (custom resources such as LLM tokens).
    CountPerWindow,
}

impl Unit {
    /// A short name for the unit, used in JSON output and messages.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Millicores => "millicores",
            Unit::Count => "count",
            Unit::BytesPerSecond => "bytes_per_second",
            Unit::CountPerWindow => "count_per_window",
        }
    }
}

/// A kind of resource that an agent uses and a quota limits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Resident memory.
    Memory,
    /// CPU time.
    Cpu,
    /// Processes (thread groups: a process with many threads counts once).
    Processes,
    /// Threads (tasks, as the kernel's pids controller counts them).
    Threads,
    /// Open file descriptors.
    Files,
    /// Open sockets.
    Connections,
    /// Storage used under the agent's workspace directories.
    Disk,
    /// Block I/O throughput.
    DiskIo,
    /// Network throughput, sent plus received.
    Network,
    /// A resource the agent reports itself (tokens, API dollars, requests).
    Custom(String),
}

/// The built-in resources, in display order.
pub const BUILTIN: [Resource; 9] = [
    Resource::Memory,
    Resource::Cpu,
    Resource::Processes,
    Resource::Threads,
    Resource::Files,
    Resource::Connections,
    Resource::Disk,
    Resource::DiskIo,
    Resource::Network,
];

impl Resource {
    /// The resource's name as written in files, JSON and the CLI.
    pub fn name(&self) -> &str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
            Resource::Processes => "processes",
            Resource::Threads => "threads",
            Resource::Files => "files",
            Resource::Connections => "connections",
            Resource::Disk => "disk",
            Resource::DiskIo => "disk_io",
            Resource::Network => "network",
            Resource::Custom(name) => name,
        }
    }

    /// The internal unit of this resource.
    pub fn unit(&self) -> Unit {
        match self {
            Resource::Memory | Resource::Disk => Unit::Bytes,
            Resource::Cpu => Unit::Millicores,
            Resource::Processes | Resource::Threads | Resource::Files | Resource::Connections => Unit::Count,
            Resource::DiskIo | Resource::Network => Unit::BytesPerSecond,
            Resource::Custom(_) => Unit::CountPerWindow,
        }
    }

    /// Whether the resource is reported by the agent rather than measured.
    pub fn is_custom(&self) -> bool {
        matches!(self, Resource::Custom(_))
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resource name that is neither built in nor a valid custom name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown resource {0:?}: expected one of memory, cpu, processes, threads, files, connections, disk, disk_io, network, \
     or a custom name of 1..64 characters from [a-z0-9_] starting with a letter"
)]
pub struct ResourceNameError(pub String);

impl FromStr for Resource {
    type Err = ResourceNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(builtin) = BUILTIN.iter().find(|r| r.name() == s) {
            return Ok(builtin.clone());
        }
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid { Ok(Resource::Custom(s.to_owned())) } else { Err(ResourceNameError(s.to_owned())) }
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in BUILTIN {
            assert_eq!(r.name().parse::<Resource>().unwrap(), r);
        }
        assert_eq!("tokens".parse::<Resource>().unwrap(), Resource::Custom("tokens".into()));
        assert_eq!("usd_micros".parse::<Resource>().unwrap().unit(), Unit::CountPerWindow);
        assert_eq!("threads".parse::<Resource>().unwrap(), Resource::Threads);
        assert_eq!(Resource::Threads.unit(), Unit::Count);
    }

    #[test]
    fn bad_names_are_rejected_with_the_accepted_forms() {
        for bad in ["", "Memory", "9lives", "with-dash", "a b", &"x".repeat(65)] {
            let err = bad.parse::<Resource>().unwrap_err();
            assert!(err.to_string().contains("expected one of memory"), "{err}");
        }
    }
}
