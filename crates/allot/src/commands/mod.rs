//! One module per command; `run` dispatches.

pub(crate) mod analyze;
mod bench;
mod bench_api;
mod bench_budget;
mod bench_cluster;
mod bench_conn;
mod bench_stop;
pub(crate) mod budget;
mod ctl;
mod daemon;
mod groups;
mod history;
mod host;
pub(crate) mod report;
mod top;
mod ui;
mod up;
mod validate;

use crate::cli::{BenchCommand, Cli, ClusterCommand, Command, QuotaCommand};
use std::process::ExitCode;

pub(crate) use groups::to_json as group_to_json;

/// A command's failure: a message for the user.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// Run the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Groups(a) => groups::run(&a),
        Command::Host(a) => host::run(&a),
        Command::Validate(a) => Ok(validate::run(&a)),
        Command::Bench(BenchCommand::Sample(a)) => bench::sample(&a),
        Command::Bench(BenchCommand::Analytics(a)) => analyze::evaluate(&a),
        Command::Bench(BenchCommand::Api(a)) => bench_api::run(&a),
        Command::Bench(BenchCommand::Budget(a)) => bench_budget::run(&a),
        Command::Bench(BenchCommand::Cluster(a)) => bench_cluster::run(&a),
        Command::Bench(BenchCommand::Connections(a)) => bench_conn::run(&a),
        Command::Bench(BenchCommand::Baseline(a)) => bench_api::baseline(&a),
        Command::Bench(BenchCommand::Stop(a)) => bench_stop::run(&a),
        Command::Analyze(a) => analyze::run(&a),
        Command::Recommend(a) => report::recommend(&a),
        Command::Report(a) => report::report(&a),
        Command::Up(a) => up::run(&a),
        Command::Daemon(a) => daemon::run(&a),
        Command::Cluster(ClusterCommand::Status(a)) => crate::cluster::status::run(&a),
        Command::Ps(a) => ctl::ps(&a),
        Command::Budget(a) => budget::run(&a),
        Command::Top(a) => top::run(&a),
        Command::Ui(a) => ui::run(&a),
        Command::Run(a) => ctl::run(&a),
        Command::Adopt(a) => ctl::adopt(&a),
        Command::Suspend(a) => ctl::act(&a, "suspend"),
        Command::Resume(a) => ctl::act(&a.agent, if a.force { "resume?force=true" } else { "resume" }),
        Command::Terminate(a) => ctl::act(&a, "terminate"),
        Command::Quota(QuotaCommand::Get(a)) => ctl::quota_get(&a),
        Command::Quota(QuotaCommand::Set(a)) => ctl::quota_set(&a),
        Command::Compliance(a) => ctl::compliance(&a),
        Command::History(a) => history::history(&a),
        Command::Events(a) => history::events(&a),
    }
}

/// Write to stdout, treating a closed pipe (`allot groups | head`) as success.
pub(crate) fn print(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to stdout: {e}").into()),
    }
}
