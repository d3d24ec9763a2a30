//! `allot ui`: where the daemon's dashboard is, and, with `--tcp`, a
//! forwarder from a loopback TCP address to the daemon's Unix socket for
//! this user's browser. A connection is passed on only when the process that
//! opened it runs as this user or root and is no agent's
//! (`allot_sys::proc::sockets`: the kernel's table of TCP sockets, then the
//! process holding the socket, checked against every agent's processes as
//! the daemon lists them): the daemon sees the forwarder's credentials, so an
//! agent must never reach it this way (checked at the connection's start and
//! every 2 s while it lasts). The daemon still asks the dashboard's
//! CSRF token for every operator action, and refuses another site's `Origin`.

use super::Error;
use crate::cli::UiArgs;
use crate::client::{default_socket, failure, request};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) fn run(args: &UiArgs) -> Result<ExitCode, Error> {
    let sock = match &args.socket {
        Some(s) => s.clone(),
        None => default_socket()?,
    };
    let (status, v) = request(&sock, "GET", "/readyz", None).map_err(|e| format!("no daemon answers on {}: {e}", sock.display()))?;
    if status != 200 {
        return Err(format!("the daemon on {} is not ready: {}", sock.display(), failure(status, &v)).into());
    }
    let Some(tcp) = &args.tcp else {
        let s = sock.display();
        println!("The dashboard of the daemon on {s}:");
        println!("  in a browser on this machine:  allot ui --socket {s} --tcp 127.0.0.1:7070, then open http://127.0.0.1:7070/ui/");
        println!("  from another host:             ssh -L 7070:{s} THIS_HOST, then open http://localhost:7070/ui/");
        println!("  with curl:                     curl --unix-socket {s} http://localhost/ui/");
        println!("  over the daemon's own TCP listener (--tcp, --token-file): http://ADDR/ui/ and log in with the token");
        return Ok(ExitCode::SUCCESS);
    };
    let addr: SocketAddr = tcp.parse().map_err(|e| format!("--tcp {tcp}: not an address such as 127.0.0.1:7070 ({e})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--tcp {tcp}: only a loopback address is served (the forwarder trusts this machine's users by uid); \
             for other hosts use the daemon's own --tcp with --token-file, or an SSH forward"
        )
        .into());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(forward(addr, sock))
}

async fn forward(addr: SocketAddr, sock: PathBuf) -> Result<ExitCode, Error> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on --tcp {addr}: {e}"))?;
    let me = listener.local_addr()?;
    let uid = rustix::process::geteuid().as_raw();
    println!("dashboard: http://{me}/ui/ (for uid {uid}'s browser; Ctrl-C stops)");
    let sock = std::sync::Arc::new(sock);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            accepted = listener.accept() => {
                let (conn, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let sock = std::sync::Arc::clone(&sock);
                tokio::spawn(async move { pass(conn, peer, me, uid, &sock).await });
            }
        }
    }
}

/// Pass one connection on to the daemon, if its process runs as `uid` or root and is no agent's.
async fn pass(mut conn: tokio::net::TcpStream, peer: SocketAddr, me: SocketAddr, uid: u32, sock: &Path) {
    let owned = sock.to_path_buf();
    let verdict = tokio::task::spawn_blocking(move || admit(peer, me, uid, &owned)).await.unwrap_or_else(|e| Err(e.to_string()));
    if let Err(why) = verdict {
        eprintln!("refused a connection from {peer}: {why}");
        return;
    }
    let mut daemon = match tokio::net::UnixStream::connect(sock).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("the daemon on {} does not answer: {e}", sock.display());
            return;
        }
    };
    // Checked again while the connection lasts: a process adopted into an agent later is cut off.
    let copy = tokio::io::copy_bidirectional(&mut conn, &mut daemon);
    tokio::pin!(copy);
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = recheck.tick() => {
                let owned = sock.to_path_buf();
                let verdict = tokio::task::spawn_blocking(move || admit(peer, me, uid, &owned)).await.unwrap_or_else(|e| Err(e.to_string()));
                if let Err(why) = verdict {
                    eprintln!("cut a connection from {peer}: {why}");
                    return;
                }
            }
        }
    }
}

/// How often an open connection's process is checked again.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the process behind `peer` may use the forwarder: this user's (or root's), and no agent's.
fn admit(peer: SocketAddr, me: SocketAddr, uid: u32, sock: &Path) -> Result<(), String> {
    let proc = &allot_sys::Roots::host().proc;
    let owner = allot_sys::proc::sockets::peer_owner(peer, me)
        .map_err(|e| format!("its owner cannot be read: {e}"))?
        .ok_or("no local process owns it")?;
    if owner.uid != uid && owner.uid != 0 {
        return Err(format!("its process runs as uid {}, not {uid}", owner.uid));
    }
    let pid = allot_sys::proc::sockets::pid_of_socket(proc, owner.inode).ok_or("the process that opened it cannot be found")?;
    let (status, agents) = request(sock, "GET", "/v1/agents", None).map_err(|e| format!("the daemon's agents cannot be read: {e}"))?;
    if status != 200 {
        return Err(format!("the daemon's agents cannot be read: {}", failure(status, &agents)));
    }
    let agent = agents
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["pids"].as_array().is_some_and(|p| p.iter().any(|x| x.as_u64() == Some(u64::from(pid)))));
    match agent {
        Some(a) => Err(format!("its process {pid} belongs to agent {}", a["id"].as_str().unwrap_or("?"))),
        None => Ok(()),
    }
}
