//! `allot up FLEET.toml`: run a fleet under its quotas in the foreground,
//! with the daemon's API on a per-run socket (given to agents as
//! `ALLOT_SOCKET`, removed at exit), so agents report usage and read their
//! quota the same way under both commands. Sockets that earlier runs killed
//! with SIGKILL left in that directory (`up-<pid>.sock`, nobody listening,
//! no process of that pid) are removed at start.

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
    if args.socket.is_none() {
        for gone in remove_stale_up_sockets(&up_socket(args)?) {
            tracing::info!(socket = %gone.display(), "removed the stale socket of an allot up that was killed");
        }
    }
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
            Ok((listener, term)) => super::daemon::run_serving(gov.with_term(term), tx, listener, args.state.clone(), None, run_for).await,
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

/// The pid in the name of a per-run socket like `ours` (`up-<pid>.sock`,
/// `allot-up-<pid>.sock`): `name` is the same prefix, digits, `.sock`.
fn up_socket_pid(ours: &str, name: &str) -> Option<u32> {
    let prefix = &ours[..ours.rfind("up-")? + 3];
    let digits = name.strip_prefix(prefix)?.strip_suffix(".sock")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Remove the sockets of earlier `allot up` runs killed before they could
/// (SIGKILL) in the directory of this run's default socket `ours`: only
/// names of the same pattern (`up-<pid>.sock`), only sockets (not following
/// links), only when connecting is refused (nobody listens, see
/// [`super::daemon::stale`]) and no process of that pid lives. Returns what
/// was removed.
pub(super) fn remove_stale_up_sockets(ours: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let (Some(dir), Some(our_name)) = (ours.parent(), ours.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| up_socket_pid(our_name, n)) else { continue };
        // The file's own type (DirEntry does not follow a symbolic link).
        if !e.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        let alive = allot_sys::signal::exists(pid);
        let path = e.path();
        if alive || !matches!(super::daemon::stale(&path), Ok(true)) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) => tracing::warn!(socket = %path.display(), error = %err, "cannot remove a stale allot up socket"),
        }
    }
    removed
}

fn gov_agents(text: &str) -> usize {
    text.matches("[[agents]]").count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_the_pattern_of_this_runs_socket_names_a_pid() {
        assert_eq!(up_socket_pid("up-12.sock", "up-345.sock"), Some(345));
        assert_eq!(up_socket_pid("allot-up-12.sock", "allot-up-345.sock"), Some(345));
        assert_eq!(up_socket_pid("allot-up-12.sock", "up-345.sock"), None);
        for other in ["up-.sock", "up-34a.sock", "up-345.sock.old", "xup-345.sock", "up-345", "up--1.sock"] {
            assert_eq!(up_socket_pid("up-12.sock", other), None, "{other}");
        }
    }

    /// The pid of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn only_stale_sockets_of_dead_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: String| dir.path().join(name);
        let ours = at(format!("up-{}.sock", std::process::id()));
        // Stale: bound, then closed (connecting is refused), its pid gone.
        let stale = at(format!("up-{}.sock", dead_pid()));
        drop(UnixListener::bind(&stale).unwrap());
        // Listening, under a dead pid's name: in use, kept.
        let live = at(format!("up-{}.sock", dead_pid()));
        let _listener = UnixListener::bind(&live).unwrap();
        // Closed, but its pid (ours) lives: kept (it may be between bind and listen).
        let running = at(format!("up-{}.sock", std::process::id()));
        // Not a socket, a link to a stale socket, another pattern: kept.
        let file = at(format!("up-{}.sock", dead_pid()));
        std::fs::write(&file, "x").unwrap();
        let target = at("target.sock".into());
        drop(UnixListener::bind(&target).unwrap());
        let link = at(format!("up-{}.sock", dead_pid()));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let other = at(format!("down-{}.sock", dead_pid()));
        drop(UnixListener::bind(&other).unwrap());
        let closed_ours = UnixListener::bind(&running).unwrap();
        drop(closed_ours);

        assert_eq!(remove_stale_up_sockets(&ours), vec![stale.clone()]);
        assert!(!stale.exists());
        for kept in [&live, &running, &file, &target, &other] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert!(std::fs::symlink_metadata(&link).is_ok(), "the link was removed");
    }
}
