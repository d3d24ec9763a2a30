//! `allot bench api`: requests per second over the daemon's Unix socket with
//! concurrent keep-alive clients (usage reports and quota reads), and the
//! daemon's CPU time per request, measured on a real daemon process.

use super::{Error, print};
use crate::cli::BenchApiArgs;
use serde_json::json;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    allot_sys::proc::stat(&allot_sys::Roots::host().proc, pid).map_or(0, |s| s.utime + s.stime)
}

/// One keep-alive client: send requests until told to stop; count answers with status 200.
fn client(sock: &Path, req: &[u8], stop: &AtomicBool, done: &AtomicU64, failed: &AtomicU64) -> Result<(), String> {
    let s = UnixStream::connect(sock).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        w.write_all(req).map_err(|e| e.to_string())?;
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let ok = line.split_whitespace().nth(1) == Some("200");
        let mut len = 0usize;
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        if ok {
            done.fetch_add(1, Ordering::Relaxed)
        } else {
            failed.fetch_add(1, Ordering::Relaxed)
        };
    }
    Ok(())
}

fn measure(sock: &Path, daemon: u32, req: Vec<u8>, clients: usize, secs: u64) -> (f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let req = Arc::new(req);
    let cpu0 = cpu_ticks(daemon);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (sock, req, stop, done, failed) = (sock.to_path_buf(), req.clone(), stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || client(&sock, &req, &stop, &done, &failed))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let cpu_s = (cpu_ticks(daemon) - cpu0) as f64 / rustix::param::clock_ticks_per_second() as f64;
    (n as f64 / elapsed, if n > 0 { cpu_s * 1e6 / n as f64 } else { 0.0 }, failed.load(Ordering::Relaxed))
}

/// The daemon under measurement: its agent terminated and the daemon stopped when dropped.
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) sock: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = crate::client::request(&self.sock, "POST", "/v1/agents/bench/terminate", None);
        std::thread::sleep(Duration::from_millis(2500));
        let _ = allot_sys::signal::signal_all(&[self.child.id()], rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

/// Start a daemon on a fleet of one sleeping agent, `bench`, in `dir`; return
/// once its socket accepts connections.
pub(super) fn start_daemon(dir: &Path) -> Result<Daemon, Error> {
    let fleet = dir.join("fleet.toml");
    std::fs::write(
        &fleet,
        "[policy]\nterminate_grace = \"1s\"\n[[agents]]\nname = \"bench\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000000\"]\n",
    )?;
    let sock = dir.join("allot.sock");
    let (state, cgroup) = (dir.join("state.db"), format!("allot-bench-api-{}", std::process::id()));
    let options: [(&str, &OsStr); 4] =
        [("--cgroup-name", cgroup.as_ref()), ("--config", fleet.as_ref()), ("--socket", sock.as_ref()), ("--state", state.as_ref())];
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("daemon").stderr(Stdio::null());
    for (flag, value) in options {
        command.arg(flag).arg(value);
    }
    let daemon = Daemon { child: command.spawn()?, sock };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&daemon.sock).is_err() {
        if Instant::now() > deadline {
            return Err("the daemon did not open its socket".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

pub(crate) fn run(args: &BenchApiArgs) -> Result<ExitCode, Error> {
    if args.clients.is_empty() || args.clients.contains(&0) || args.seconds == 0 {
        return Err("--clients needs counts above 0 and --seconds at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(dir.path())?;
    let (sock, pid) = (&daemon.sock, daemon.child.id());
    let body = r#"{"resource": "tokens", "value": 1}"#;
    let report = format!(
        "POST /v1/agents/bench/usage HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let read = b"GET /v1/agents/bench/quota HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let mut text = String::from("requests per second over the Unix socket (keep-alive), and daemon CPU per request\n");
    for &c in &args.clients {
        let (rps, cpu_us, failed) = measure(sock, pid, report.clone(), c, args.seconds);
        let (qps, qcpu_us, qfailed) = measure(sock, pid, read.clone(), c, args.seconds);
        let row = json!({"clients": c, "usage_reports_per_s": rps, "usage_cpu_us_per_request": cpu_us, "quota_reads_per_s": qps, "quota_cpu_us_per_request": qcpu_us, "failed": failed + qfailed});
        if args.json {
            print(&format!("{row}\n"))?;
        } else {
            text.push_str(&format!("{c:>4} clients: usage reports {rps:>9.0}/s ({cpu_us:.1} us CPU each)   quota reads {qps:>9.0}/s ({qcpu_us:.1} us CPU each)   failed {}\n", failed + qfailed));
        }
    }
    if !args.json {
        print(&text)?;
    }
    drop(daemon);
    Ok(ExitCode::SUCCESS)
}
