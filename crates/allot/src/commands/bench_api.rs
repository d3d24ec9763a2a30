//! `allot bench api`: requests per second over the daemon's Unix socket with
//! concurrent keep-alive clients (usage reports and quota reads), and the
//! daemon's CPU time per request, measured on a real daemon process.

use super::{Error, print};
use crate::cli::BenchLoadArgs;
use crate::loadgen::{Driven, KeepAlive, Tally, drive, request};
use serde_json::json;
use std::ffi::OsStr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// One keep-alive client: send `req` until told to stop; count answers with status 200.
fn client(sock: &Path, req: &[u8], tally: &Tally) -> Result<(), String> {
    let mut conn = KeepAlive::connect(sock).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while !tally.stopped() {
        let status = conn.send(req, &mut body).map_err(|e| e.to_string())?;
        tally.count(status == 200);
    }
    Ok(())
}

fn measure(sock: &Path, daemon: u32, req: &[u8], clients: usize, secs: u64) -> Driven {
    drive(clients, Duration::from_secs(secs), daemon, |_, tally| client(sock, req, tally))
}

/// The daemon under measurement: its agents terminated and the daemon stopped when dropped.
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) sock: PathBuf,
    agents: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for a in &self.agents {
            let _ = crate::client::request(&self.sock, "POST", &format!("/v1/agents/{a}/terminate"), None);
        }
        // Each agent gets its grace (1 s), then is killed; the daemon then stops.
        let deadline = Instant::now() + Duration::from_secs(5);
        for a in &self.agents {
            while Instant::now() < deadline {
                match crate::client::request(&self.sock, "GET", &format!("/v1/agents/{a}"), None) {
                    Ok((200, v)) if v["state"] != "exited" => std::thread::sleep(Duration::from_millis(50)),
                    _ => break,
                }
            }
        }
        let _ = allot_sys::signal::signal_all(&[self.child.id()], rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

/// The fleet of one sleeping agent, `bench`.
const ONE_AGENT: &str =
    "[policy]\nterminate_grace = \"1s\"\n[[agents]]\nname = \"bench\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000000\"]\n";

/// Start a daemon on a fleet of one sleeping agent, `bench`, in `dir`; return
/// once its socket accepts connections.
pub(super) fn start_daemon(dir: &Path) -> Result<Daemon, Error> {
    start_fleet(dir, ONE_AGENT, &["bench"], "api")
}

/// Start a daemon on `fleet` (whose agents, `agents`, it terminates when
/// dropped) in `dir`, its cgroup root `allot-bench-<what>-<pid>`; return once
/// its socket accepts connections.
pub(super) fn start_fleet(dir: &Path, fleet: &str, agents: &[&str], what: &str) -> Result<Daemon, Error> {
    let fleet_file = dir.join("fleet.toml");
    std::fs::write(&fleet_file, fleet)?;
    let sock = dir.join("allot.sock");
    let (state, cgroup) = (dir.join("state.db"), format!("allot-bench-{what}-{}", std::process::id()));
    let options: [(&str, &OsStr); 4] =
        [("--cgroup-name", cgroup.as_ref()), ("--config", fleet_file.as_ref()), ("--socket", sock.as_ref()), ("--state", state.as_ref())];
    let mut command = Command::new(std::env::current_exe()?);
    let log = dir.join("daemon.log");
    command.arg("daemon").stderr(Stdio::from(std::fs::File::create(&log)?));
    for (flag, value) in options {
        command.arg(flag).arg(value);
    }
    let mut daemon = Daemon { child: command.spawn()?, sock, agents: agents.iter().map(|a| (*a).to_owned()).collect() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&daemon.sock).is_err() {
        if Instant::now() > deadline || daemon.child.try_wait()?.is_some() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("the daemon did not open its socket; it said: {}", said.trim()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

pub(crate) fn run(args: &BenchLoadArgs) -> Result<ExitCode, Error> {
    if args.clients.is_empty() || args.clients.contains(&0) || args.seconds == 0 {
        return Err("--clients needs counts above 0 and --seconds at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(dir.path())?;
    let (sock, pid) = (&daemon.sock, daemon.child.id());
    let report = request("POST", "/v1/agents/bench/usage", r#"{"resource": "tokens", "value": 1}"#);
    let read = request("GET", "/v1/agents/bench/quota", "");
    let mut text = String::from("requests per second over the Unix socket (keep-alive), and daemon CPU per request\n");
    for &c in &args.clients {
        let r = measure(sock, pid, &report, c, args.seconds);
        let q = measure(sock, pid, &read, c, args.seconds);
        if let Some(e) = r.first_error.as_ref().or(q.first_error.as_ref()) {
            return Err(format!("a client failed at {c} clients: {e}").into());
        }
        let (rps, cpu_us, failed, qps, qcpu_us, qfailed) = (r.per_second, r.cpu_us, r.failed, q.per_second, q.cpu_us, q.failed);
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
