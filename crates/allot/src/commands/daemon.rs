//! `allot daemon`: the governor as a service with the HTTP API on a Unix
//! socket. [`run_serving`] (the governor with the API beside it) is shared
//! with `allot up`, which serves the same API on a per-run socket.

use super::Error;
use crate::cli::DaemonArgs;
use crate::governor::backend::RealBackend;
use crate::governor::{Governor, Options, ViewMode};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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

/// The socket path, its directory made, a stale socket of a dead daemon
/// removed. Only a socket is ever removed: anything else at the path (a
/// file, a directory, a symlink) is refused, as is a socket a daemon answers on.
fn prepare_socket(args: &DaemonArgs) -> Result<PathBuf, Error> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => crate::client::default_socket()?,
    };
    prepare_socket_path(socket)
}

/// [`prepare_socket`] for a given path (also `allot up`'s).
pub(super) fn prepare_socket_path(socket: PathBuf) -> Result<PathBuf, Error> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = match std::fs::symlink_metadata(&socket) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(socket),
        Err(e) => return Err(format!("cannot inspect --socket {}: {e}", socket.display()).into()),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Err(format!(
            "--socket {} exists and is {what}, not a socket: allot removes only a stale socket there; remove it yourself or choose another path",
            socket.display()
        )
        .into());
    }
    match stale(&socket) {
        Ok(true) => {}
        Ok(false) => return Err(format!("{} is in use: another allot daemon runs there", socket.display()).into()),
        Err(e) => return Err(format!("cannot tell whether {} is stale: connecting to it failed: {e}", socket.display()).into()),
    }
    std::fs::remove_file(&socket).map_err(|e| format!("cannot remove the stale socket {}: {e}", socket.display()))?;
    Ok(socket)
}

/// Whether the socket at `path` is stale: connecting is refused
/// (ECONNREFUSED, nobody listens). `Ok(false)`: someone answers; an error:
/// connecting failed otherwise (no permission, a full backlog), so it cannot tell.
pub(super) fn stale(path: &Path) -> std::io::Result<bool> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) => Err(e),
    }
}

/// The least a bearer token may have, in bytes after trimming.
const MIN_TOKEN_BYTES: usize = 32;

/// The bearer token of `--token-file`, if given: at least [`MIN_TOKEN_BYTES`]
/// and not readable by group or others (checked on the descriptor it is read from).
fn token(args: &DaemonArgs) -> Result<Option<String>, Error> {
    let Some(path) = &args.token_file else { return Ok(None) };
    let name = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("--token-file {name}: cannot open it: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("--token-file {name}: cannot inspect it: {e}"))?;
    if !meta.is_file() {
        return Err(format!("--token-file {name} is not a regular file").into());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(
            format!("--token-file {name} is readable by {who} (mode {mode:03o}): the token must be private; run chmod 600 {name}").into()
        );
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| format!("--token-file {name}: cannot read it: {e}"))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "--token-file {name}: the token has {} bytes; it must have at least {MIN_TOKEN_BYTES} (such as the output of: head -c 32 /dev/urandom | base64)",
            token.len()
        )
        .into());
    }
    Ok(Some(token.to_owned()))
}

/// The TCP listener of `--tcp`, bound before the Unix socket so that a busy address fails first.
fn bind_tcp(args: &DaemonArgs) -> Result<Option<std::net::TcpListener>, Error> {
    let Some(addr) = &args.tcp else { return Ok(None) };
    let tcp = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on --tcp {addr}: {e}"))?;
    tcp.set_nonblocking(true).map_err(|e| format!("cannot listen on --tcp {addr}: {e}"))?;
    Ok(Some(tcp))
}

/// The TCP server with its bearer token, when configured; served until
/// `stop` changes, under the same connection caps as the socket (every TCP
/// connection in one bucket).
fn tcp_server(
    tcp: Option<(std::net::TcpListener, String)>,
    app: axum::Router,
    conns: std::sync::Arc<crate::api::Connections>,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some((tcp, token)) = tcp else { return Ok(None) };
    let addr = tcp.local_addr().map_err(|e| format!("cannot listen on tcp: {e}"))?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "also on tcp (bearer token required)");
    let tcp_app = crate::api::tcp_router(app, token);
    Ok(Some(tokio::spawn(async move {
        let _ = crate::api::conn::serve_tcp(tcp, tcp_app, conns, async move {
            let _ = stop.changed().await;
        })
        .await;
    })))
}

/// Listen on `socket` (inside the runtime). SIGTERM is caught from here on
/// (the returned signal goes to [`Governor::with_term`]): a caller that sends
/// it as soon as the socket accepts stops allot cleanly.
pub(super) fn listen(socket: &Path) -> Result<(tokio::net::UnixListener, tokio::signal::unix::Signal), Error> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // Every user may connect: what a caller may do is decided by its peer credentials.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot chmod {}: {e}", socket.display()))?;
    Ok((listener, term))
}

pub(crate) fn run(args: &DaemonArgs) -> Result<ExitCode, Error> {
    // Every check before anything is bound or started: the fleet, the token, the socket path.
    let fleet = fleet(args)?;
    let cluster = cluster_config(args)?;
    let token = token(args)?;
    let tcp = bind_tcp(args)?.zip(token);
    let socket = prepare_socket(args)?;
    let _ = allot_sys::spawn::raise_nofile_limit();
    // The state's lock first: it names the real conflict when two daemons share a state.
    allot_store::Store::check_free(&args.state).map_err(|e| e.to_string())?;
    // Its agents come through the API too: descriptors are set aside for as many as the limit holds.
    let expected = fleet.agents.len().max(allot_sys::probe::FdBudget::agents_that_fit(allot_sys::spawn::nofile_limit()));
    let backend = RealBackend::new(&args.cgroup_name, expected)?;
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
    let mut gov = Governor::new(fleet, backend, &opts)?.with_control(rx);
    tracing::info!(mode = %gov.mode(), socket = %socket.display(), state = %args.state.display(), "allot daemon starting");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        // Cluster mode: registered, and the first slices granted, before any agent starts.
        let node = match cluster {
            Some(cfg) => {
                let name = cfg.node.clone();
                let etcd = std::sync::Arc::new(crate::cluster::etcd::Etcd::new(cfg.endpoints.clone()));
                let mut node = crate::cluster::node::register(etcd, cfg).await?;
                let caps = node.initial(&gov.cluster_demand()).await;
                let (moves_tx, moves_rx) = tokio::sync::mpsc::unbounded_channel();
                gov = gov.with_cluster(&name, caps, moves_tx);
                Some((node, moves_rx))
            }
            None => None,
        };
        let (node_stop, node_stop_rx) = watch::channel(false);
        let node_task = node.map(|(n, moves)| tokio::spawn(n.run(tx.clone(), moves, node_stop_rx)));
        let summary = match listen(&socket) {
            Ok((listener, term)) => run_serving(gov.with_term(term), tx, listener, args.state.clone(), tcp, None).await,
            Err(e) => Err(e),
        };
        let _ = node_stop.send(true);
        if let Some(t) = node_task {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&socket);
        summary.map(|s| tracing::info!(events = s.events, "allot daemon stopped"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The cluster settings of `--cluster`, checked.
fn cluster_config(args: &DaemonArgs) -> Result<Option<crate::cluster::Config>, Error> {
    let (Some(url), Some(node)) = (&args.cluster, &args.node) else { return Ok(None) };
    crate::cluster::check_node_name(node)?;
    if args.cluster_ttl.subsec_nanos() != 0 || args.cluster_ttl < std::time::Duration::from_secs(2) {
        return Err(format!(
            "--cluster-ttl {}: use whole seconds, at least 2s (etcd's leases count whole seconds)",
            humantime::format_duration(args.cluster_ttl)
        )
        .into());
    }
    if args.cluster_margin >= args.cluster_ttl {
        return Err(format!(
            "--cluster-margin ({}) must be shorter than --cluster-ttl ({})",
            humantime::format_duration(args.cluster_margin),
            humantime::format_duration(args.cluster_ttl)
        )
        .into());
    }
    Ok(Some(crate::cluster::Config {
        endpoints: crate::cluster::etcd::parse_url(url)?,
        node: node.clone(),
        ttl: args.cluster_ttl,
        margin: args.cluster_margin,
        chunk_percent: args.cluster_chunk,
    }))
}

/// Run `gov` (built `with_control` on the receiver of `tx`) with the API
/// served on `listener`, and on TCP when given, until it stops: the same
/// router and connection caps for `allot daemon` and `allot up`.
pub(super) async fn run_serving(
    gov: Governor<RealBackend>,
    tx: tokio::sync::mpsc::UnboundedSender<crate::governor::control::Control>,
    listener: tokio::net::UnixListener,
    state: PathBuf,
    tcp: Option<(std::net::TcpListener, String)>,
    run_for: Option<std::time::Duration>,
) -> Result<crate::governor::Summary, Error> {
    let metrics = gov.metrics();
    let owner = rustix::process::geteuid().as_raw();
    let conns = crate::api::Connections::new(crate::api::Limits::from_fd_limit(), owner, Some(metrics.clone()));
    let app = crate::api::router_with(tx, state, owner, metrics, gov.sample_interval());
    let (stop_tx, stop_rx) = watch::channel(false);
    let tcp = tcp_server(tcp, app.clone(), conns.clone(), stop_rx.clone())?;
    let mut rx = stop_rx;
    let server = tokio::spawn(crate::api::conn::serve_unix(listener, app, conns, async move {
        let _ = rx.changed().await;
    }));
    let summary = gov.run(run_for).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(t) = tcp {
        let _ = t.await;
    }
    summary
}
