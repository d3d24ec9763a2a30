//! `allot bench budget`: reserve + settle pairs per second over the daemon's
//! Unix socket with concurrent keep-alive clients, on a real daemon whose 3
//! agents share one group and one pool and have huge budgets at every level
//! (agent, group, pool), and the daemon's CPU time per pair; then, when `redis-server` is on the PATH,
//! `INCRBY` round trips per second on a redis-server of its own (on a Unix
//! socket in the temp directory, no persistence) with the same client
//! counts, its CPU per request, and the ratio per request (a pair is two
//! requests). Only the processes it started are stopped, by pid.

use super::bench_api::start_fleet;
use super::{Error, print};
use crate::cli::BenchLoadArgs;
use crate::loadgen::{Driven, KeepAlive, Tally, drive, request};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The agents, members of group `bench`, drawing on pool `bench`.
const AGENTS: [&str; 3] = ["bench1", "bench2", "bench3"];

/// Budgets no measurement reaches: 10^15 tokens a day at each level.
const HUGE: &str = "1000000G/day";

fn fleet() -> String {
    let mut f = format!(
        "[policy]\nterminate_grace = \"1s\"\n\n[groups.bench]\nextends = \"standard_agent\"\ntotals = {{ tokens = \"{HUGE}\" }}\n\n[pools.bench]\ntokens = \"{HUGE}\"\n"
    );
    for a in AGENTS {
        f.push_str(&format!(
            "\n[[agents]]\nname = \"{a}\"\ngroup = \"bench\"\ncommand = [\"sleep\", \"1000000\"]\nlimits.tokens = {{ hard = \"{HUGE}\" }}\npools = [\"bench\"]\n"
        ));
    }
    f
}

/// The id in a reservation's answer (`{"id": 17, ...}`).
fn reservation_id(body: &[u8]) -> Option<u64> {
    let at = body.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits: Vec<u8> = body[at..].iter().skip_while(|b| b.is_ascii_whitespace()).take_while(|b| b.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// One client: reserve 100 tokens for `agent`, settle 60, until told to stop; a pair counts when both are answered as expected.
pub(super) fn pairs(sock: &Path, agent: &str, tally: &Tally) -> Result<(), String> {
    let mut conn = KeepAlive::connect(sock).map_err(|e| e.to_string())?;
    let reserve = request("POST", &format!("/v1/agents/{agent}/reservations"), r#"{"resources": {"tokens": 100}, "ttl": "60s"}"#);
    let mut body = Vec::new();
    while !tally.stopped() {
        let status = conn.send(&reserve, &mut body).map_err(|e| e.to_string())?;
        if status != 201 {
            tally.count(false);
            continue;
        }
        let id = reservation_id(&body).ok_or_else(|| format!("no id in the reservation {}", String::from_utf8_lossy(&body)))?;
        let settle = request("POST", &format!("/v1/reservations/{id}/settle"), r#"{"resources": {"tokens": 60}}"#);
        let status = conn.send(&settle, &mut body).map_err(|e| e.to_string())?;
        tally.count(status == 200);
    }
    Ok(())
}

/// A redis-server of the benchmark's own: stopped by its pid when dropped.
struct Redis {
    child: Child,
    sock: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = allot_sys::signal::signal_all(&[self.child.id()], rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` in a directory of the PATH.
pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Start `server` on a Unix socket in `dir` (no TCP port, no persistence); return once it answers PING.
fn start_redis(server: &Path, dir: &Path) -> Result<Redis, Error> {
    let sock = dir.join("redis.sock");
    let child = Command::new(server)
        .args(["--port", "0", "--unixsocket"])
        .arg(&sock)
        .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    let mut redis = Redis { child, sock };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = UnixStream::connect(&redis.sock) {
            let mut w = s.try_clone()?;
            w.write_all(b"*1\r\n$4\r\nPING\r\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            if line.starts_with("+PONG") {
                return Ok(redis);
            }
        }
        if Instant::now() > deadline || redis.child.try_wait()?.is_some() {
            return Err(format!("{} did not answer on {}", server.display(), redis.sock.display()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-server 7.0.15`, from `redis-server --version` (`Redis server v=7.0.15 sha=...`).
fn redis_version(server: &Path) -> String {
    let out = Command::new(server).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    match out.split_whitespace().find_map(|w| w.strip_prefix("v=")) {
        Some(v) => format!("redis-server {v}"),
        None => "redis-server (version unknown)".into(),
    }
}

/// One client: `INCRBY k 10` round trips until told to stop; a reply `:N` counts.
fn incrby(sock: &Path, tally: &Tally) -> Result<(), String> {
    let s = UnixStream::connect(sock).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !tally.stopped() {
        w.write_all(b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n10\r\n").map_err(|e| e.to_string())?;
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("redis-server closed the connection".into());
        }
        tally.count(line.starts_with(':'));
    }
    Ok(())
}

/// Measure `INCRBY` on a redis-server of our own with each client count
/// beside allot's row; its version, or why it could not be measured.
fn compare(server: &Path, dir: &Path, clients: &[usize], time: Duration, rows: &mut [Value]) -> Result<String, String> {
    let version = redis_version(server);
    let r = start_redis(server, dir).map_err(|e| e.to_string())?;
    let pid = r.child.id();
    for (row, &c) in rows.iter_mut().zip(clients) {
        let d = drive(c, time, pid, |_, tally| incrby(&r.sock, tally));
        check(&d, "redis", c).map_err(|e| e.to_string())?;
        let per_request = row["cpu_us_per_pair"].as_f64().unwrap_or(0.0) / 2.0;
        let ratio = if d.cpu_us > 0.0 { per_request / d.cpu_us } else { f64::NAN };
        row["redis"] =
            json!({"incrby_per_s": d.per_second, "cpu_us_per_request": d.cpu_us, "failed": d.failed, "allot_cpu_per_request_ratio": ratio});
    }
    Ok(version)
}

pub(super) fn check(d: &Driven, what: &str, clients: usize) -> Result<(), Error> {
    match &d.first_error {
        Some(e) => Err(format!("{what}: {} of {clients} clients failed: {e}", d.errors).into()),
        None => Ok(()),
    }
}

pub(crate) fn run(args: &BenchLoadArgs) -> Result<ExitCode, Error> {
    if args.clients.is_empty() || args.clients.contains(&0) || args.seconds == 0 {
        return Err("--clients needs counts above 0 and --seconds at least 1".into());
    }
    let time = Duration::from_secs(args.seconds);
    let dir = tempfile::tempdir()?;
    let daemon = start_fleet(dir.path(), &fleet(), &AGENTS, "budget")?;
    let (sock, pid) = (daemon.sock.clone(), daemon.child.id());
    let mut rows = Vec::new();
    for &c in &args.clients {
        let d = drive(c, time, pid, |i, tally| pairs(&sock, AGENTS[i % AGENTS.len()], tally));
        check(&d, "allot", c)?;
        rows.push(json!({"clients": c, "pairs_per_s": d.per_second, "cpu_us_per_pair": d.cpu_us, "failed": d.failed}));
    }
    drop(daemon);
    let redis = match on_path("redis-server") {
        None => Err("redis-server is not installed (apt-get install redis-server)".to_owned()),
        Some(server) => compare(&server, dir.path(), &args.clients, time, &mut rows),
    };
    if args.json {
        for mut row in rows {
            if let Err(why) = &redis {
                row["redis"] = json!({"skipped": why});
            }
            print(&format!("{row}\n"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    print(&text(&rows, &redis))?;
    Ok(ExitCode::SUCCESS)
}

fn text(rows: &[Value], redis: &Result<String, String>) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut t = String::from(
        "allot: reserve + settle pairs per second over the Unix socket (keep-alive clients; 3 agents in one group and one pool, budgets at agent, group and pool levels), daemon CPU per pair\n",
    );
    for r in rows {
        t.push_str(&format!(
            "{:>4} clients: {:>9.0} pairs/s   {:>7.1} us CPU a pair ({:.1} a request)   failed {}\n",
            r["clients"].as_u64().unwrap_or(0),
            f(&r["pairs_per_s"]),
            f(&r["cpu_us_per_pair"]),
            f(&r["cpu_us_per_pair"]) / 2.0,
            r["failed"]
        ));
    }
    match redis {
        Err(why) => t.push_str(&format!("redis: skipped: {why}\n")),
        Ok(version) => {
            t.push_str(&format!("redis ({version}): INCRBY round trips per second over its Unix socket, its CPU per request\n"));
            for r in rows {
                let x = &r["redis"];
                t.push_str(&format!(
                    "{:>4} clients: {:>9.0} INCRBY/s  {:>7.1} us CPU each   allot per request: {:.1}x the CPU, {:.2}x the requests/s   failed {}\n",
                    r["clients"].as_u64().unwrap_or(0),
                    f(&x["incrby_per_s"]),
                    f(&x["cpu_us_per_request"]),
                    f(&x["allot_cpu_per_request_ratio"]),
                    2.0 * f(&r["pairs_per_s"]) / f(&x["incrby_per_s"]),
                    x["failed"]
                ));
            }
        }
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use allot_core::Resource;

    #[test]
    fn the_id_is_read_from_a_reservation() {
        assert_eq!(reservation_id(br#"{"agent":"a","created_at":"x","id":1234,"levels":{}}"#), Some(1234));
        assert_eq!(reservation_id(br#"{"id": 7}"#), Some(7));
        assert_eq!(reservation_id(br#"{"error":{"code":"exhausted"}}"#), None);
    }

    #[test]
    fn the_fleet_puts_every_agent_in_the_group_and_the_pool_with_a_budget_at_each_level() {
        let f = crate::fleet::parse(&fleet()).unwrap_or_else(|e| panic!("{e:?}"));
        let tokens = Resource::Custom("tokens".into());
        assert_eq!(f.pools["bench"][&tokens].hard, 1_000_000_000_000_000);
        let group = f.groups.iter().find(|g| g.name == "bench").map(|g| g.budgets[&tokens].hard);
        assert_eq!(group, Some(1_000_000_000_000_000));
        assert_eq!(f.agents.len(), AGENTS.len());
        for a in &f.agents {
            assert_eq!((a.spec.group.as_str(), a.spec.pools.clone()), ("bench", vec!["bench".to_owned()]), "{}", a.spec.id);
            assert_eq!(f.ledger.quota(&a.spec.id).map(|q| q.limits[&tokens].hard), Some(1_000_000_000_000_000));
        }
    }
}
