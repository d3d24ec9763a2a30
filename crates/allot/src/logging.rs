//! Logs through `tracing`: filtered by `ALLOT_LOG` (an `EnvFilter`
//! directive such as `info` or `allot=debug`), written to stderr as plain
//! text, or as JSON lines with `--log-format json` (the daemon), so an
//! operator can follow one agent's story (`agent` fields and spans) or one
//! request's (`request` spans).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber; `default` is the filter when `ALLOT_LOG` is not set.
pub fn init(format: LogFormat, default: &str) {
    let filter = match std::env::var("ALLOT_LOG") {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("allot: warning: ALLOT_LOG={v:?} is not a filter ({e}); using {default:?}");
            EnvFilter::new(default)
        }),
        Err(_) => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}
