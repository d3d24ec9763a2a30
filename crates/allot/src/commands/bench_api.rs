//! `allot bench api`: requests per second over the daemon's Unix socket with
//! concurrent keep-alive clients (usage reports and quota reads), and the
//! daemon's CPU time per request, measured on a real daemon process; in the
//! same run the same load on a minimal HTTP server (the same HTTP stack and
//! runtime, on the same kind of socket, answering the daemon's bytes without
//! doing anything), each figure given as a ratio to it; and how long an event
//! takes from its record to an SSE subscriber, idle and under load.

use super::{Error, print};
use crate::cli::{BenchBaselineArgs, BenchLoadArgs};
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
    start_fleet_with(dir, fleet, agents, what, &[])
}

/// [`start_fleet`] with more arguments to `allot daemon`.
pub(super) fn start_fleet_with(dir: &Path, fleet: &str, agents: &[&str], what: &str, extra: &[String]) -> Result<Daemon, Error> {
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
    command.args(extra);
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

/// Serve the baseline (see [`BenchBaselineArgs`]) until killed.
pub(crate) fn baseline(args: &BenchBaselineArgs) -> Result<ExitCode, Error> {
    use axum::body::Bytes;
    use axum::http::{Method, header::CONTENT_TYPE};
    let get: Bytes = std::fs::read(&args.get_body)?.into();
    let post: Bytes = std::fs::read(&args.post_body)?.into();
    let _ = std::fs::remove_file(&args.socket);
    // The daemon's runtime: one thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&args.socket)?;
        let app = axum::Router::new().fallback(move |method: Method, _body: Bytes| {
            let answer = if method == Method::GET { get.clone() } else { post.clone() };
            async move { ([(CONTENT_TYPE, "application/json")], answer) }
        });
        axum::serve(listener, app).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The baseline server, killed when dropped.
struct Baseline {
    child: Child,
    sock: PathBuf,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_baseline(dir: &Path, get_body: &str, post_body: &str) -> Result<Baseline, Error> {
    let (get, post, sock) = (dir.join("baseline-get.json"), dir.join("baseline-post.json"), dir.join("baseline.sock"));
    std::fs::write(&get, get_body)?;
    std::fs::write(&post, post_body)?;
    let child = Command::new(std::env::current_exe()?)
        .args(["bench", "baseline", "--socket"])
        .arg(&sock)
        .arg("--get-body")
        .arg(&get)
        .arg("--post-body")
        .arg(&post)
        .spawn()?;
    let mut b = Baseline { child, sock };
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&b.sock).is_err() {
        if Instant::now() > deadline || b.child.try_wait()?.is_some() {
            return Err("the baseline server did not open its socket".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(b)
}

/// The body of one answer to `req`.
fn answer_of(sock: &Path, method: &str, path: &str, body: &str) -> Result<String, Error> {
    let (status, text) = KeepAlive::connect(sock)?.call(method, path, body)?;
    if status != 200 {
        return Err(format!("{method} {path} answered {status}: {text}").into());
    }
    Ok(text)
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Record `n` events (an operator throttle and its clearing, in turn, every
/// `gap`) and return, for each, the time from its record (its `at_ms`, the
/// governor's time truncated to the millisecond: an upper bound) to its
/// arrival at an SSE subscriber, in milliseconds.
fn sse_latency(sock: &Path, n: usize, gap: Duration) -> Result<Vec<f64>, Error> {
    let last = answer_of(sock, "GET", "/v1/events?follow=false&since=0", "")?;
    let since =
        serde_json::from_str::<serde_json::Value>(&last)?.as_array().and_then(|a| a.last().and_then(|e| e["seq"].as_u64())).unwrap_or(0);
    let (tx, rx) = std::sync::mpsc::channel::<f64>();
    let follower = {
        let sock = sock.to_owned();
        std::thread::spawn(move || {
            let mut seen = 0;
            crate::client::follow(&sock, &format!("/v1/events?since={since}"), |v| {
                let arrived = now_ms();
                if let Some(at) = v["at_ms"].as_f64() {
                    let _ = tx.send(arrived - at);
                }
                seen += 1;
                seen < n
            })
        })
    };
    // The stream is open once its first event (the first throttle) can be seen: give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = KeepAlive::connect(sock)?;
    for i in 0..n {
        let path = if i % 2 == 0 { "/v1/agents/bench/throttle?cpu=500m" } else { "/v1/agents/bench/clear" };
        let (status, text) = conn.call("POST", path, "")?;
        if status != 200 {
            return Err(format!("POST {path} answered {status}: {text}").into());
        }
        std::thread::sleep(gap);
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(ms) => out.push(ms),
            Err(_) => return Err(format!("the event stream gave {} of {n} events in time", out.len()).into()),
        }
    }
    follower.join().map_err(|_| "the event follower panicked")??;
    Ok(out)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(k).copied().unwrap_or(f64::NAN)
}

pub(crate) fn run(args: &BenchLoadArgs) -> Result<ExitCode, Error> {
    if args.clients.is_empty() || args.clients.contains(&0) || args.seconds == 0 {
        return Err("--clients needs counts above 0 and --seconds at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let daemon = start_daemon(dir.path())?;
    let (sock, pid) = (&daemon.sock, daemon.child.id());
    let report_body = r#"{"resource": "tokens", "value": 1}"#;
    let report = request("POST", "/v1/agents/bench/usage", report_body);
    let read = request("GET", "/v1/agents/bench/quota", "");
    let base = start_baseline(
        dir.path(),
        &answer_of(sock, "GET", "/v1/agents/bench/quota", "")?,
        &answer_of(sock, "POST", "/v1/agents/bench/usage", report_body)?,
    )?;
    let base_pid = base.child.id();
    let mut text = String::from(
        "requests per second over the Unix socket (keep-alive) and server CPU per request: allot's daemon, and a minimal HTTP \
         server answering the same bytes (axum on one tokio thread, as the daemon) in the same run; cost ratio = baseline rate / daemon rate\n",
    );
    for &c in &args.clients {
        let r = measure(sock, pid, &report, c, args.seconds);
        let q = measure(sock, pid, &read, c, args.seconds);
        let br = measure(&base.sock, base_pid, &report, c, args.seconds);
        let bq = measure(&base.sock, base_pid, &read, c, args.seconds);
        if let Some(e) = [&r, &q, &br, &bq].into_iter().find_map(|d| d.first_error.as_ref()) {
            return Err(format!("a client failed at {c} clients: {e}").into());
        }
        let failed = r.failed + q.failed + br.failed + bq.failed;
        let row = json!({
            "clients": c,
            "usage_reports_per_s": r.per_second, "usage_cpu_us_per_request": r.cpu_us,
            "quota_reads_per_s": q.per_second, "quota_cpu_us_per_request": q.cpu_us,
            "baseline_posts_per_s": br.per_second, "baseline_post_cpu_us_per_request": br.cpu_us,
            "baseline_gets_per_s": bq.per_second, "baseline_get_cpu_us_per_request": bq.cpu_us,
            "usage_cost_ratio": br.per_second / r.per_second, "quota_cost_ratio": bq.per_second / q.per_second,
            "failed": failed,
        });
        if args.json {
            print(&format!("{row}\n"))?;
        } else {
            text.push_str(&format!(
                "{c:>4} clients: usage reports {:>8.0}/s ({:.1} us CPU), baseline {:>8.0}/s ({:.1} us CPU): {:.2}x its cost\n              quota reads   {:>8.0}/s ({:.1} us CPU), baseline {:>8.0}/s ({:.1} us CPU): {:.2}x its cost   failed {failed}\n",
                r.per_second, r.cpu_us, br.per_second, br.cpu_us, br.per_second / r.per_second,
                q.per_second, q.cpu_us, bq.per_second, bq.cpu_us, bq.per_second / q.per_second,
            ));
        }
    }
    drop(base);
    // Events to an SSE subscriber: idle, then while the largest load sends usage reports.
    let n = 200;
    let mut idle = sse_latency(sock, n, Duration::from_millis(10))?;
    let busiest = args.clients.iter().copied().max().unwrap_or(1);
    let (loaded, driven) = std::thread::scope(|s| {
        let load = s.spawn(|| measure(sock, pid, &report, busiest, args.seconds.max(3) + 2));
        std::thread::sleep(Duration::from_millis(500));
        let lat = sse_latency(sock, n, Duration::from_millis(10));
        (lat, load.join())
    });
    let mut loaded = loaded?;
    let driven = driven.map_err(|_| "a load thread panicked")?;
    let (ip50, ip99, lp50, lp99) =
        (percentile(&mut idle, 50.0), percentile(&mut idle, 99.0), percentile(&mut loaded, 50.0), percentile(&mut loaded, 99.0));
    let row = json!({"sse_events": n, "sse_idle_p50_ms": ip50, "sse_idle_p99_ms": ip99, "sse_loaded_p50_ms": lp50, "sse_loaded_p99_ms": lp99,
        "sse_load": format!("{busiest} clients sending usage reports, {:.0}/s", driven.per_second)});
    if args.json {
        print(&format!("{row}\n"))?;
    } else {
        text.push_str(&format!(
            "event record to SSE subscriber ({n} events, from the event's time truncated to the millisecond: upper bounds): idle p50 {ip50:.2} ms, p99 {ip99:.2} ms; \
             with {busiest} clients sending {:.0} usage reports/s: p50 {lp50:.2} ms, p99 {lp99:.2} ms\n",
            driven.per_second
        ));
        print(&text)?;
    }
    drop(daemon);
    Ok(ExitCode::SUCCESS)
}
