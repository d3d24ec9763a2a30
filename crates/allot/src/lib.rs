//! The `allot` binary's library: command-line interface, fleet files and the
//! commands. `main.rs` only calls [`main`]; integration tests use the
//! public modules directly.
#![forbid(unsafe_code)]

pub mod api;
mod cli;
pub mod client;
pub mod cluster;
mod commands;
pub mod fleet;
pub mod governor;
pub mod http;
pub mod loadgen;
pub mod logging;
pub mod metrics;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// Parse the command line, run the command, map the outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (format, default) = match &cli.command {
        cli::Command::Daemon(a) => (a.log_format, "info"),
        _ => (logging::LogFormat::Text, "warn"),
    };
    logging::init(format, default);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("allot: error: {e}");
            ExitCode::from(1)
        }
    }
}
