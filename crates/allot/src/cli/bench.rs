//! `allot bench`'s subcommands and their arguments.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Start N real agents (each two processes in its own cgroup) and report
    /// microseconds per agent per sample for allot, psutil and sysinfo.
    ///
    /// Needs root and cgroups, python3 with psutil (pip install psutil).
    Sample(BenchSampleArgs),
    /// Evaluate the pattern classifier on a generated labelled corpus and the
    /// forecasts on generated leaks: accuracy per class, confusion matrix, errors.
    Analytics(BenchAnalyticsArgs),
    /// Start a daemon and measure usage reports and quota reads per second
    /// over its Unix socket with concurrent keep-alive clients, and its CPU per request.
    Api(BenchLoadArgs),
    /// Start a daemon (3 agents in one group and one pool, huge budgets at
    /// each level) and measure reserve + settle pairs per second with
    /// concurrent keep-alive clients and its CPU per pair; beside it,
    /// `INCRBY` round trips on a redis-server of its own when one is
    /// installed (Debian: apt-get install redis-server), and the cost per
    /// request against it.
    Budget(BenchLoadArgs),
    /// Start an etcd of its own (etcd on the PATH: apt-get install etcd-server)
    /// and measure reserve + settle pairs per second through one daemon in
    /// single-host mode, then through one in cluster mode on that etcd
    /// (a rolling pool budget the load keeps drawing slices of), with the
    /// etcd writes per second the node makes at steady state.
    ///
    /// Needs root and cgroups (the agents run in cgroups).
    Cluster(BenchLoadArgs),
    /// Start a daemon and measure `/healthz` latency as the operator, alone
    /// and while another user holds many idle connections (needs root).
    Connections(BenchConnArgs),
    /// Start `allot up` with N sleeping agents (terminate grace 0) and time
    /// its stop: a notice to each, the kill, every cgroup removed, allot
    /// exited; then check that no agent process and no cgroup is left.
    ///
    /// Needs root and cgroups.
    Stop(BenchStopArgs),
    /// Serve the minimal HTTP server `bench api` compares the daemon with.
    #[command(hide = true)]
    Baseline(BenchBaselineArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BenchStopArgs {
    /// How many agents.
    #[arg(long, default_value_t = 5000)]
    pub(crate) agents: usize,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The minimal HTTP server of `bench api`: every GET answered with one
/// file's bytes, every POST (its body read) with another's, as JSON.
#[derive(Debug, Args)]
pub(crate) struct BenchBaselineArgs {
    /// The Unix socket to listen on.
    #[arg(long)]
    pub(crate) socket: PathBuf,
    /// The answer to a GET.
    #[arg(long)]
    pub(crate) get_body: PathBuf,
    /// The answer to a POST.
    #[arg(long)]
    pub(crate) post_body: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BenchConnArgs {
    /// Idle connections the other user opens and holds.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) idle: usize,
    /// `/healthz` requests per measurement.
    #[arg(long, default_value_t = 200)]
    pub(crate) requests: usize,
    /// The other user's uid (and gid).
    #[arg(long, default_value_t = 65534)]
    pub(crate) uid: u32,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Be the other user: open `--idle` connections to SOCKET and hold them until stdin closes.
    #[arg(long, value_name = "SOCKET", hide = true)]
    pub(crate) hold: Option<PathBuf>,
}

/// The load of `bench api` and `bench budget`.
#[derive(Debug, Args)]
pub(crate) struct BenchLoadArgs {
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub(crate) clients: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub(crate) seconds: u64,
    /// Print JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchAnalyticsArgs {
    /// Series per class.
    #[arg(long, default_value_t = 200)]
    pub(crate) per_class: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BenchSampleArgs {
    /// Agent counts to measure, comma-separated (each one object of output).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub(crate) agents: Vec<usize>,
    /// Sampling rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub(crate) rounds: usize,
    /// Print JSON: one object per agent count.
    #[arg(long)]
    pub(crate) json: bool,
}
