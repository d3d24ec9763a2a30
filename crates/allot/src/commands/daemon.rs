//! `allot daemon`: the governor as a service with the HTTP API on a Unix socket.

use super::Error;
use crate::cli::DaemonArgs;
use crate::governor::backend::RealBackend;
use crate::governor::{Governor, Options, ViewMode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::sync::watch;

fn fleet(args: &DaemonArgs) -> Result<crate::fleet::Fleet, Error> {
    let text = match &args.config {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => String::new(),
    };
    Ok(crate::fleet::parse(&text).map_err(|errs| {
        let name = args.config.as_ref().map_or_else(String::new, |p| p.display().to_string());
        errs.iter().map(|e| format!("{name}:{e}")).collect::<Vec<_>>().join("\n")
    })?)
}

/// The socket path, its directory made, a stale socket of a dead daemon removed.
fn prepare_socket(args: &DaemonArgs) -> Result<PathBuf, Error> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => crate::client::default_socket()?,
    };
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(format!("{} is in use: another allot daemon runs there", socket.display()).into());
        }
        std::fs::remove_file(&socket).map_err(|e| format!("cannot remove the stale socket {}: {e}", socket.display()))?;
    }
    Ok(socket)
}

/// The TCP listener with its bearer token, when configured; served until
/// `stop` changes, under the same connection caps as the socket (every TCP
/// connection in one bucket).
async fn tcp_server(
    args: &DaemonArgs,
    app: axum::Router,
    conns: std::sync::Arc<crate::api::Connections>,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let (Some(addr), Some(token_file)) = (&args.tcp, &args.token_file) else { return Ok(None) };
    let token = std::fs::read_to_string(token_file).map_err(|e| format!("cannot read {}: {e}", token_file.display()))?.trim().to_owned();
    if token.len() < 16 {
        return Err(format!("{}: the token must have at least 16 characters", token_file.display()).into());
    }
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "also on tcp (bearer token required)");
    let tcp_app = crate::api::tcp_router(app, token);
    Ok(Some(tokio::spawn(async move {
        let _ = crate::api::conn::serve_tcp(tcp, tcp_app, conns, async move {
            let _ = stop.changed().await;
        })
        .await;
    })))
}

fn listen(socket: &Path) -> Result<tokio::net::UnixListener, Error> {
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // Every user may connect: what a caller may do is decided by its peer credentials.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot chmod {}: {e}", socket.display()))?;
    Ok(listener)
}

pub(crate) fn run(args: &DaemonArgs) -> Result<ExitCode, Error> {
    let fleet = fleet(args)?;
    let socket = prepare_socket(args)?;
    let _ = allot_sys::spawn::raise_nofile_limit();
    let backend = RealBackend::new(&args.cgroup_name, fleet.agents.len().max(1));
    let opts = Options {
        state: args.state.clone(),
        events_file: None,
        run_for: None,
        view: ViewMode::Quiet,
        cgroup_name: args.cgroup_name.clone(),
        notify: true,
        socket: Some(std::path::absolute(&socket).unwrap_or_else(|_| socket.clone())),
        readopt: true,
        leave_running: true,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gov = Governor::new(fleet, backend, &opts)?.with_control(rx);
    tracing::info!(mode = %gov.mode(), socket = %socket.display(), state = %args.state.display(), "allot daemon starting");
    let metrics = gov.metrics();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = listen(&socket)?;
        let owner = rustix::process::geteuid().as_raw();
        let conns = crate::api::Connections::new(crate::api::Limits::from_fd_limit(), owner, Some(metrics.clone()));
        let app = crate::api::router(tx, args.state.clone(), owner, metrics);
        let (stop_tx, stop_rx) = watch::channel(false);
        let tcp = tcp_server(args, app.clone(), conns.clone(), stop_rx.clone()).await?;
        let mut rx = stop_rx;
        let server = tokio::spawn(crate::api::conn::serve_unix(listener, app, conns, async move {
            let _ = rx.changed().await;
        }));
        let summary = gov.run(None).await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        if let Some(t) = tcp {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&socket);
        summary.map(|s| tracing::info!(events = s.events, "allot daemon stopped"))
    })?;
    Ok(ExitCode::SUCCESS)
}
