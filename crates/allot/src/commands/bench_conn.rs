//! `allot bench connections`: `/healthz` latency as the operator (p50, p99,
//! max) on a real daemon, first alone and then while an unprivileged user
//! (a child of this command running as `--uid`) holds N idle connections.
//! Needs root, to run that child as another user.
//!
//! The same command with `--hold SOCKET` is that child: it opens `--idle`
//! connections to SOCKET, prints `open N failed M`, and holds them until
//! its stdin closes.

use super::bench_api::start_daemon;
use super::{Error, print};
use crate::cli::BenchConnArgs;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The child: open `n` connections and hold them until stdin closes.
fn hold(sock: &Path, n: usize) -> Result<ExitCode, Error> {
    let _ = allot_sys::spawn::raise_nofile_limit();
    let limit = allot_sys::spawn::nofile_limit();
    if limit < n as u64 + 32 {
        return Err(format!("the open-files limit ({limit}) is too low to hold {n} connections").into());
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    for _ in 0..n {
        match UnixStream::connect(sock) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    print(&format!("open {} failed {failed}\n", held.len()))?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(ExitCode::SUCCESS)
}

/// One `GET /healthz` on a new connection: its latency, or why it failed.
fn healthz(sock: &Path, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    if !resp.starts_with(b"HTTP/1.1 200") {
        return Err(format!("answer: {}", String::from_utf8_lossy(&resp).lines().next().unwrap_or("none")));
    }
    Ok(start.elapsed())
}

/// Latencies of `n` requests: (p50, p99, max) in milliseconds, and the failures.
fn measure(sock: &Path, n: usize) -> ((f64, f64, f64), Vec<String>) {
    let mut ms = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for _ in 0..n {
        match healthz(sock, Duration::from_secs(5)) {
            Ok(d) => ms.push(d.as_secs_f64() * 1000.0),
            Err(e) => failed.push(e),
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    ((at(0.5), at(0.99), ms.last().copied().unwrap_or(f64::NAN)), failed)
}

/// Open descriptors of a process.
fn fds(pid: u32) -> u64 {
    allot_sys::proc::fds::count(&allot_sys::Roots::host().proc, pid).unwrap_or(0)
}

/// How many connections one holder process may open: its hard open-files
/// limit (raised when root may), less some for itself.
fn per_holder(idle: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let want = idle as u64 + 64;
    if lim.maximum.is_some_and(|m| m < want) {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: lim.current, maximum: Some(want) });
    }
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
    usize::try_from(hard.saturating_sub(64)).unwrap_or(usize::MAX).clamp(1, idle.max(1))
}

/// Processes of `uid`, together holding `idle` connections to `sock`
/// (as many as their open-files limits require); returns them once each has
/// opened its share, with what each printed.
pub(crate) fn strangers(sock: &Path, idle: usize, uid: u32) -> Result<(Vec<std::process::Child>, String), Error> {
    let chunk = per_holder(idle);
    let mut children = Vec::new();
    let mut said = Vec::new();
    let mut left = idle;
    while left > 0 {
        let n = left.min(chunk);
        left -= n;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "connections", "--idle", &n.to_string(), "--hold"])
            .arg(sock)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        said.push(line.trim().to_owned());
        children.push(child);
    }
    Ok((children, said.join(", ")))
}

pub(crate) fn run(args: &BenchConnArgs) -> Result<ExitCode, Error> {
    if let Some(sock) = &args.hold {
        return hold(sock, args.idle);
    }
    if args.requests == 0 {
        return Err("--requests must be at least 1".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("allot bench connections needs root: it opens the idle connections as another user (--uid)".into());
    }
    let dir = tempfile::tempdir()?;
    // The stranger must reach the socket in this directory.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let daemon = start_daemon(dir.path())?;
    let (sock, pid) = (daemon.sock.clone(), daemon.child.id());
    let (alone, alone_failed) = measure(&sock, args.requests);
    let fds_alone = fds(pid);
    let (children, opened) = strangers(&sock, args.idle, args.uid)?;
    let (flooded, flooded_failed) = measure(&sock, args.requests);
    let fds_flooded = fds(pid);
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let row = json!({
        "idle_stranger_connections": args.idle, "stranger": opened, "requests": args.requests,
        "alone_ms": {"p50": alone.0, "p99": alone.1, "max": alone.2}, "alone_failed": alone_failed.len(),
        "flooded_ms": {"p50": flooded.0, "p99": flooded.1, "max": flooded.2}, "flooded_failed": flooded_failed.len(),
        "daemon_fds": {"alone": fds_alone, "flooded": fds_flooded},
    });
    if args.json {
        print(&format!("{row}\n"))?;
    } else {
        print(&format!(
            "GET /healthz as the operator, {} requests on new connections\n  alone:                              p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  failed {}  (daemon fds {fds_alone})\n  with {} idle connections of uid {} ({}): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  failed {}  (daemon fds {fds_flooded})\n",
            args.requests,
            alone.0,
            alone.1,
            alone.2,
            alone_failed.len(),
            args.idle,
            args.uid,
            opened,
            flooded.0,
            flooded.1,
            flooded.2,
            flooded_failed.len()
        ))?;
        for e in flooded_failed.iter().take(3) {
            print(&format!("  failure: {e}\n"))?;
        }
    }
    drop(daemon);
    Ok(ExitCode::SUCCESS)
}
