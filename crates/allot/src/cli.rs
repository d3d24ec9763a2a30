//! Command-line definitions (clap). Flags are defined once here.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// allot: a resource governor for multi-agent systems.
///
/// Gives every agent a quota, measures what it really uses, enforces limits
/// with escalating actions, degrades gracefully and recovers.
#[derive(Debug, Parser)]
#[command(name = "allot", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Show the quota groups with every limit and total.
    Groups(GroupsArgs),
    /// Show this machine's capacity: total, reserved and allocatable per resource.
    Host(HostArgs),
    /// Check a fleet file and print every error with its location.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 unreadable.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    /// Print JSON (values in internal units: bytes, millicores, counts).
    #[arg(long)]
    pub(crate) json: bool,
    /// Include the groups defined or changed by this fleet file.
    #[arg(long, value_name = "FILE")]
    pub(crate) fleet: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct HostArgs {
    /// Print JSON (values in internal units).
    #[arg(long)]
    pub(crate) json: bool,
    /// Open-files capacity of the host [default: 10000].
    #[arg(long, value_name = "COUNT")]
    pub(crate) files: Option<String>,
    /// Network link capacity, such as 1Gbit/s or 10MB/s [default: 1Gbit/s].
    #[arg(long, value_name = "RATE")]
    pub(crate) network: Option<String>,
    /// Percent reserved for the system, such as memory=30 (repeatable).
    /// Defaults: memory 25, cpu 20, processes 10, files 10, network 10.
    #[arg(long = "reserve", value_name = "RESOURCE=PERCENT")]
    pub(crate) reserve: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The fleet file (TOML).
    pub(crate) file: PathBuf,
}
