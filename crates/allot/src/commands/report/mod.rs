//! `allot recommend` and `allot report`: read recorded usage, history and
//! analyses back from the state database (or, with `--socket`, from a
//! running daemon's `GET /v1/recommendations` and `GET /v1/report`, which
//! call the same functions); reports as text, JSON, SVG charts (usage over
//! time with the soft and hard limits and the actions marked) or an HTML
//! page holding tables and charts, over a range whose ends are RFC 3339
//! times or durations ago. Reads are bounded: per agent and resource at
//! most [`REPORT_MAX_SAMPLES`] raw samples, else the per-minute rollups (at
//! most [`REPORT_MAX_MINUTES`]), at most [`REPORT_MAX_POINTS`] in a report;
//! beyond that the range is refused, naming `since`.

mod gather;
mod range;
mod recommend;
mod render;

pub(crate) use gather::chart;
pub(crate) use range::{Range, range};
pub(crate) use recommend::{recommend, recommendations};
pub(crate) use render::render;

use super::{Error, print};
use crate::cli::ReportArgs;
use allot_core::Resource;
use allot_store::Store;
use serde_json::Value;
use std::process::ExitCode;

/// The most raw samples a report reads per agent and resource; a range
/// holding more is summarized from the per-minute rollups.
pub(crate) const REPORT_MAX_SAMPLES: usize = 100_000;
/// The most per-minute rollups a report reads per agent and resource (69
/// days); a range holding more samples and more minutes is refused
/// (`since` named).
pub(crate) const REPORT_MAX_MINUTES: usize = 100_000;
/// The most points (samples and minutes) a report reads over every agent
/// and resource (16 MB of them): a series beyond what is left is read from
/// the rollups, or refused (`since` named).
pub(crate) const REPORT_MAX_POINTS: usize = 1_000_000;

/// Why a read of the state database (a report, an analysis, recommendations) has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// No agent of that id in the store.
    #[error("no agent {0:?}")]
    NoAgent(String),
    /// A parameter is not acceptable (`field` names it).
    #[error("{message}")]
    Invalid {
        /// The parameter at fault (`--since` on the command line, `since` in a query).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Nothing to show (no samples in the range for a chart).
    #[error("{0}")]
    NoData(String),
    /// The store could not be read.
    #[error("{0}")]
    Store(String),
}

impl From<allot_store::StoreError> for ReadError {
    fn from(e: allot_store::StoreError) -> Self {
        ReadError::Store(e.to_string())
    }
}

impl ReadError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ReadError::Invalid { field: field.to_owned(), message: message.into() }
    }
}

fn open(path: &std::path::Path) -> Result<Store, Error> {
    if !path.exists() {
        return Err(format!("no state database at {} (run `allot up FLEET.toml` first, or pass --state)", path.display()).into());
    }
    Ok(Store::open_read_only(path)?)
}

/// The wall-clock time now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis)
}

/// A query string value, percent-encoded (what is not unreserved).
pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Ask a daemon: the body of a 2xx answer, else its error.
pub(crate) fn ask_daemon(sock: &std::path::Path, path: &str) -> Result<Value, Error> {
    let (st, v) = crate::client::request(sock, "GET", path, None)?;
    if (200..300).contains(&st) { Ok(v) } else { Err(crate::client::failure(st, &v).into()) }
}

/// A recorded resource name as a resource (a custom one when not built in).
fn resource(name: &str) -> Resource {
    name.parse().unwrap_or(Resource::Custom(name.to_owned()))
}

pub(crate) fn report(args: &ReportArgs) -> Result<ExitCode, Error> {
    let body = match &args.socket {
        Some(sock) => {
            let mut path = match &args.agent {
                Some(a) => format!("/v1/agents/{}/report", encode(a)),
                None => "/v1/report".to_owned(),
            };
            path.push_str(&format!("?since={}&format={}", encode(&args.since), encode(&args.format)));
            if let Some(u) = &args.until {
                path.push_str(&format!("&until={}", encode(u)));
            }
            match ask_daemon(sock, &path)? {
                Value::String(s) => s,
                v => format!("{}\n", serde_json::to_string_pretty(&v)?),
            }
        }
        None => {
            let store = open(&args.state)?;
            let range = range(("--since", &args.since), args.until.as_deref().map(|u| ("--until", u)), now_ms())?;
            match render(&store, args.agent.as_deref(), range, &args.format, "--format") {
                Err(ReadError::NoAgent(a)) => return Err(format!("no agent {a:?} in {}", args.state.display()).into()),
                r => r?.body,
            }
        }
    };
    match &args.output {
        Some(p) => {
            std::fs::write(p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print(&body)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
const NOW: u64 = 1_796_294_400_000; // 2026-12-03T10:40:00Z
