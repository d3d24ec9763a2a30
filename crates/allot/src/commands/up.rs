//! `allot up FLEET.toml`: run a fleet under its quotas in the foreground,
//! with the daemon's API on a per-run socket (given to agents as
//! `ALLOT_SOCKET`, removed at exit), so agents report usage and read their
//! quota the same way under both commands.

use super::{Error, print};
use crate::cli::UpArgs;
use crate::governor::backend::RealBackend;
use crate::governor::{Governor, Options, ViewMode};
use std::io::IsTerminal;
use std::process::ExitCode;

pub(crate) fn run(args: &UpArgs) -> Result<ExitCode, Error> {
    let path = args.fleet.display();
    let text = std::fs::read_to_string(&args.fleet).map_err(|e| format!("cannot read {path}: {e}"))?;
    let fleet = match crate::fleet::parse(&text) {
        Ok(f) => f,
        Err(errors) => {
            for e in &errors {
                eprintln!("{path}:{e}");
            }
            return Err(format!("{path}: invalid fleet file: {} error(s)", errors.len()).into());
        }
    };
    if fleet.agents.is_empty() {
        return Err(format!("{path}: the fleet has no [[agents]]").into());
    }
    let run_for = args.run_for.as_deref().map(|d| allot_core::quantity::parse_duration("--for", d)).transpose()?;
    let view = if args.quiet {
        ViewMode::Quiet
    } else if args.plain || !std::io::stdout().is_terminal() {
        ViewMode::Plain
    } else {
        ViewMode::Live
    };
    match allot_sys::spawn::raise_nofile_limit() {
        Ok(_) => {}
        Err(e) => eprintln!("allot: warning: {e}"),
    }
    if args.cgroup_name.is_empty() || args.cgroup_name.contains('/') || args.cgroup_name.starts_with('.') {
        return Err(format!("--cgroup-name {:?}: use a plain directory name", args.cgroup_name).into());
    }
    allot_store::Store::check_free(&args.state).map_err(|e| e.to_string())?;
    let backend = if args.no_cgroups {
        RealBackend::without_cgroups("--no-cgroups given")
    } else {
        RealBackend::new(&args.cgroup_name, fleet.agents.len())?
    };
    let socket = super::daemon::prepare_socket_path(up_socket(args)?)?;
    let socket = std::path::absolute(&socket).unwrap_or(socket);
    let opts = Options {
        state: args.state.clone(),
        events_file: args.events.clone(),
        run_for,
        view,
        cgroup_name: args.cgroup_name.clone(),
        notify: !args.no_notify,
        socket: Some(socket.clone()),
        readopt: false,
        leave_running: false,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gov = Governor::new(fleet, backend, &opts)?.with_control(rx).until_all_exit();
    if view != ViewMode::Live {
        eprintln!(
            "allot up: {} agents; {}; state {}; API on {} (ALLOT_SOCKET)",
            gov_agents(&text),
            gov.mode(),
            args.state.display(),
            socket.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let summary = rt.block_on(async {
        let summary = match super::daemon::listen(&socket) {
            Ok(listener) => super::daemon::run_serving(gov, tx, listener, args.state.clone(), None, run_for).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&socket);
        summary
    })?;
    let mut out = format!("allot up: done; {} events recorded in {}\n", summary.events, args.state.display());
    for (agent, how) in &summary.exits {
        out.push_str(&format!("  {agent}: {how}\n"));
    }
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The API's socket for this run: `--socket`, else `/run/allot/up-<pid>.sock`
/// as root, else `$XDG_RUNTIME_DIR/allot-up-<pid>.sock`, else `up-<pid>.sock`
/// next to the state database.
fn up_socket(args: &UpArgs) -> Result<std::path::PathBuf, Error> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    let name = format!("up-{}.sock", std::process::id());
    if rustix::process::geteuid().is_root() {
        return Ok(std::path::Path::new("/run/allot").join(name));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Ok(std::path::PathBuf::from(d).join(format!("allot-{name}")));
    }
    let dir = args.state.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    Ok(dir.join(name))
}

fn gov_agents(text: &str) -> usize {
    text.matches("[[agents]]").count()
}
