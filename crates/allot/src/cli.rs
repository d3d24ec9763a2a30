//! Command-line definitions (clap). Flags are defined once here.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod bench;
mod cluster;
pub(crate) use bench::{BenchAnalyticsArgs, BenchBaselineArgs, BenchCommand, BenchConnArgs, BenchLoadArgs, BenchSampleArgs, BenchStopArgs};
pub(crate) use cluster::{ClusterCommand, ClusterStatusArgs, parse_duration, parse_percent};

/// The state database's default path: where `allot up` and `allot daemon`
/// record, and where the commands that read the records look.
const STATE_DB: &str = ".allot/state.db";

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
    /// Run a fleet of agents under their quotas, in the foreground, with a live view.
    ///
    /// Every agent starts in its own cgroup (or, without cgroups, as a process
    /// tree allot follows through /proc). Ctrl-C or SIGTERM stops every agent
    /// gracefully (notice, grace, kill) and exits 0.
    Up(UpArgs),
    /// Show a cluster of daemons (cluster mode): its nodes with their leases and
    /// capacity, each cluster total with its slices and use per node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run the governor as a service with an HTTP API on a Unix socket.
    ///
    /// Callers are authorized by their peer credentials: the socket's owner
    /// and root may do everything; an agent's own processes may read their
    /// agent and events; anyone else is refused.
    Daemon(DaemonArgs),
    /// Start a command as an agent of a running daemon.
    Run(RunArgs),
    /// Adopt a running process as an agent of a running daemon.
    Adopt(AdoptArgs),
    /// A live terminal view of a running daemon: agents by pressure, usage
    /// bars against soft and hard limits, recent actions (q quits).
    Top(TopArgs),
    /// Open the daemon's browser dashboard: print its URL (and how to reach
    /// it from another host); with --tcp, serve it on a loopback address for
    /// this user's browser until Ctrl-C.
    ///
    /// The forwarder passes a connection to the daemon's Unix socket only when
    /// the process that opened it runs as this user (or root), found in the
    /// kernel's table of TCP sockets; the daemon then applies its
    /// peer-credential rules as for any caller of the socket.
    Ui(UiArgs),
    /// List the agents of a running daemon (with each one's budget use: spent/hard per custom resource).
    Ps(PsArgs),
    /// Show the budgets on custom resources of a running daemon: window, limit,
    /// spent, reserved, remaining and when the counted spend next drops.
    ///
    /// Without arguments: every budget (agents', groups', pools') and the number
    /// of open reservations. With AGENT: the budgets that apply to it (its own,
    /// its group's, its pools') and its open reservations. With --pool: one
    /// pool's. Amounts are counts of the resource (tokens, usd_micros): exact
    /// when short (10k), else rounded (12.3k); --json gives the daemon's answer
    /// as is, exact.
    #[command(
        after_help = "Examples:\n  allot budget                  every budget\n  allot budget writer           the budgets that apply to agent writer, its reservations\n  allot budget --pool shared    pool shared\n  allot budget writer --json    the daemon's JSON"
    )]
    Budget(BudgetArgs),
    /// Suspend an agent of a running daemon (freeze its whole tree).
    Suspend(ActArgs),
    /// Release the operator's suspension and throttle of an agent of a running daemon
    /// (`--force`: every holder's); the answer says who still holds it.
    Resume(ResumeArgs),
    /// Terminate an agent of a running daemon (notice, grace, kill).
    Terminate(ActArgs),
    /// Read or change an agent's quota on a running daemon.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// An agent's quota compliance on a running daemon: per resource usage,
    /// soft, hard, burst, status (ok, soft, burst, hard) and the pending
    /// escalation with when it falls due; who holds it throttled or suspended.
    Compliance(ComplianceArgs),
    /// Show the enforcement history with each attempt's real outcome.
    History(HistoryArgs),
    /// Show the recorded events.
    Events(EventsArgs),
    /// Classify a usage series from CSV (`timestamp_seconds,value` per line):
    /// pattern, confidence, characteristics, forecast and recommendation.
    Analyze(AnalyzeArgs),
    /// Show the latest recommendation per agent and resource from the state database.
    Recommend(RecommendArgs),
    /// Report usage, violations, actions and recommendations for a time range.
    Report(ReportArgs),
    /// Benchmarks (figures printed, not asserted).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// The fleet file (TOML; see `allot validate`).
    pub(crate) fleet: PathBuf,
    /// Stop after this long, such as 60s or 5m.
    #[arg(long = "for", value_name = "DURATION")]
    pub(crate) run_for: Option<String>,
    /// Also write every event as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
    /// Print events as lines instead of redrawing a table (the default when
    /// stdout is not a terminal).
    #[arg(long, conflicts_with = "quiet")]
    pub(crate) plain: bool,
    /// Print only the final summary.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Name of allot's cgroup, created beneath the cgroup allot runs in.
    #[arg(long, value_name = "NAME", default_value = "allot")]
    pub(crate) cgroup_name: String,
    /// Do not use cgroups: follow process trees through /proc and act with signals.
    #[arg(long)]
    pub(crate) no_cgroups: bool,
    /// Do not use kernel notifications (memory thresholds, cgroup events,
    /// process exits): react at the next sample only.
    #[arg(long)]
    pub(crate) no_notify: bool,
    /// The socket of this run's API (agents get it as ALLOT_SOCKET; removed at exit)
    /// [default: /run/allot/up-PID.sock as root, else $XDG_RUNTIME_DIR/allot-up-PID.sock,
    /// else up-PID.sock next to the state database].
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// A fleet file whose agents the daemon starts (optional).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The Unix socket [default: /run/allot/allot.sock as root, else $XDG_RUNTIME_DIR/allot.sock].
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
    /// Name of allot's cgroup, created beneath the cgroup allot runs in.
    #[arg(long, value_name = "NAME", default_value = "allot")]
    pub(crate) cgroup_name: String,
    /// Also serve the API on this TCP address (such as 127.0.0.1:7070); needs --token-file.
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub(crate) tcp: Option<String>,
    /// A file holding the bearer token every TCP request must carry.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Log lines as text or JSON (one object per line); `ALLOT_LOG` filters them (default info).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t)]
    pub(crate) log_format: crate::logging::LogFormat,
    /// Cluster mode: the etcd members' client addresses (etcd://HOST:PORT[,HOST:PORT...]).
    /// Group totals (memory, cpu, processes) and group and pool budgets are then
    /// cluster-wide, each node holding a leased slice of each.
    #[arg(long, value_name = "URL", requires = "node")]
    pub(crate) cluster: Option<String>,
    /// This daemon's node name in the cluster (letters, digits, '-', '_', '.').
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub(crate) node: Option<String>,
    /// The node's lease: its slices are its own until its last keepalive + this - --cluster-margin.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub(crate) cluster_ttl: std::time::Duration,
    /// Kept before the lease's end for clocks and delays.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub(crate) cluster_margin: std::time::Duration,
    /// A node asks for (and returns) slices in chunks of this share of each total (1% to 25%).
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = crate::cli::parse_percent)]
    pub(crate) cluster_chunk: u64,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The agent's id.
    #[arg(long)]
    pub(crate) name: String,
    /// Its quota group.
    #[arg(long, default_value = "standard_agent")]
    pub(crate) group: String,
    /// A limit, such as memory.hard=300Mi (repeatable).
    #[arg(long = "limit", value_name = "RESOURCE.FIELD=VALUE")]
    pub(crate) limits: Vec<String>,
    /// Priority 1..10.
    #[arg(long)]
    pub(crate) priority: Option<i64>,
    /// Wait until the agent exits and print how it ended.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Print JSON: `{"id", "pids", "cgroup", ...}` (cgroup: its directories, one per hierarchy;
    /// empty without cgroups); with --wait, a second line `{"id", "state", "exit"}` when it ends.
    #[arg(long)]
    pub(crate) json: bool,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Run it as this user (a name, uid or uid:gid). Unset: your own user;
    /// when you are root, nobody (an agent runs as root only with --user root).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AdoptArgs {
    /// The process.
    pub(crate) pid: u32,
    /// The agent's id.
    #[arg(long)]
    pub(crate) name: String,
    /// Its quota group.
    #[arg(long, default_value = "standard_agent")]
    pub(crate) group: String,
    /// Move the process into the agent's cgroup (else it is followed through /proc).
    #[arg(long = "move")]
    pub(crate) move_it: bool,
    /// A limit, such as memory.hard=300Mi (repeatable).
    #[arg(long = "limit", value_name = "RESOURCE.FIELD=VALUE")]
    pub(crate) limits: Vec<String>,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Refresh interval.
    #[arg(long, default_value = "1s")]
    pub(crate) interval: String,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct UiArgs {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Serve the dashboard on this loopback address (such as 127.0.0.1:7070) for this user's browser.
    #[arg(long, value_name = "ADDR")]
    pub(crate) tcp: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    /// Print JSON: an array of {id, group, state, pids, usage, ...}.
    #[arg(long)]
    pub(crate) json: bool,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BudgetArgs {
    /// Only the budgets that apply to this agent, and its open reservations.
    pub(crate) agent: Option<String>,
    /// Only this pool's budgets.
    #[arg(long, value_name = "P", conflicts_with = "agent")]
    pub(crate) pool: Option<String>,
    /// Print the daemon's JSON: {"at", "budgets": [...], "reservations": [...]}.
    #[arg(long)]
    pub(crate) json: bool,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    /// The agent.
    pub(crate) id: String,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ComplianceArgs {
    /// The agent.
    pub(crate) id: String,
    /// Print JSON (values in internal units).
    #[arg(long)]
    pub(crate) json: bool,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    #[command(flatten)]
    pub(crate) agent: ActArgs,
    /// Also lift the policy's and host pressure's holds and cancel the policy's pending escalations
    /// (without it, only the operator's own holds are released).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Show an agent's quota.
    Get(ActArgs),
    /// Change limits at run time, such as `memory.hard=300Mi processes.burst=40`:
    /// each field given is merged over the agent's current limits (those given
    /// at `run --limit` and by earlier changes are kept), soft <= hard <= burst
    /// is checked after the merge (an error names the field), and the
    /// resulting quota is printed.
    Set(QuotaSetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct QuotaSetArgs {
    /// The agent.
    pub(crate) id: String,
    /// RESOURCE.FIELD=VALUE (FIELD: soft, hard, burst, action).
    #[arg(required = true)]
    pub(crate) changes: Vec<String>,
    /// The daemon's socket.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Only this agent.
    pub(crate) agent: Option<String>,
    /// Ask a running daemon on this socket instead of reading the state database.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Print JSON (an array of records).
    #[arg(long)]
    pub(crate) json: bool,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Follow new events live from a running daemon (server-sent events).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Ask a running daemon on this socket (with --follow, the default socket when not given).
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub(crate) since: u64,
    /// Only topics matching this glob, such as 'resource_management.enforcement.*'.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// The CSV file: `timestamp_seconds,value` per line (a header line is allowed).
    #[arg(long, value_name = "FILE", required_unless_present = "agent", conflicts_with = "agent")]
    pub(crate) csv: Option<PathBuf>,
    /// Analyze an agent's recorded samples from the state database instead (on demand).
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// With --agent: how far back to look.
    #[arg(long, default_value = "1h")]
    pub(crate) window: String,
    /// With --agent: the state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
    /// With --agent: ask a running daemon on this socket (it analyzes its recorded samples).
    #[arg(long, value_name = "PATH", requires = "agent")]
    pub(crate) socket: Option<PathBuf>,
    /// The resource the values measure (sets the units of --limit).
    #[arg(long, default_value = "memory")]
    pub(crate) resource: String,
    /// Take the limits from this group.
    #[arg(long, conflicts_with = "limit")]
    pub(crate) group: Option<String>,
    /// Limits as soft=...,hard=... in human units of the resource.
    #[arg(long, value_name = "soft=Q,hard=Q")]
    pub(crate) limit: Option<String>,
    /// Forecast horizon for the predictive warning.
    #[arg(long, default_value = "10m")]
    pub(crate) horizon: String,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RecommendArgs {
    /// Only this agent.
    pub(crate) agent: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Ask a running daemon on this socket instead of reading the state database.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Only this agent (default: all).
    pub(crate) agent: Option<String>,
    /// Every agent (the default when no agent is named).
    #[arg(long, conflicts_with = "agent")]
    pub(crate) all: bool,
    /// From: a time (RFC 3339, such as 2026-12-03T10:00:00Z) or a duration ago (such as 1h or 30m).
    #[arg(long, default_value = "1h", value_name = "TIME|DURATION")]
    pub(crate) since: String,
    /// To: a time (RFC 3339) or a duration ago [default: now].
    #[arg(long, value_name = "TIME|DURATION")]
    pub(crate) until: Option<String>,
    /// text, json, svg or html.
    #[arg(long, default_value = "text")]
    pub(crate) format: String,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Ask a running daemon on this socket instead of reading the state database.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// The state database.
    #[arg(long, value_name = "PATH", default_value = STATE_DB)]
    pub(crate) state: PathBuf,
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
