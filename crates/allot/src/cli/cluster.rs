//! Cluster mode's command line: `allot cluster status` and the value
//! parsers of `allot daemon`'s cluster flags.

use clap::Args;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// Nodes (lease, time to live, capacity, agents), each cluster total
    /// (group totals and budgets) with its slices and use per node.
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ClusterStatusArgs {
    /// The etcd members' client addresses (etcd://HOST:PORT[,HOST:PORT...]).
    #[arg(long, value_name = "URL")]
    pub(crate) cluster: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A duration such as `10s`, `500ms` (for clap).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = allot_core::quantity::parse_duration("duration", s).map_err(|e| e.to_string())?;
    if d.is_zero() { Err(format!("{s:?}: use more than 0")) } else { Ok(d) }
}

/// A cluster chunk such as `5%` (1 % to 25 %: a node keeps up to two idle
/// chunks, so larger ones let one node hold what the others need), for clap.
pub(crate) fn parse_percent(s: &str) -> Result<u64, String> {
    let n: u64 =
        s.trim().trim_end_matches('%').trim().parse().map_err(|_| format!("{s:?}: use a whole percentage from 1% to 25%, such as 5%"))?;
    if (1..=25).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{s:?}: use 1% to 25% (a node keeps up to two idle chunks: larger ones let one node starve the others)"))
    }
}
