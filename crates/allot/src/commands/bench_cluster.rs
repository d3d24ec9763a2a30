//! `allot bench cluster`: reserve + settle pairs per second through a daemon
//! in single-host mode and through one in cluster mode on an etcd of the
//! benchmark's own, in one run, and the etcd writes per second the node
//! makes (its revision's growth: slice changes, its record, nothing per
//! reservation) at steady state, idle and under each load. Only the
//! processes it started are stopped, by pid.

use super::bench_api::start_fleet_with;
use super::bench_budget::{check, on_path, pairs};
use super::{Error, print};
use crate::cli::BenchLoadArgs;
use crate::cluster::etcd::Etcd;
use crate::loadgen::drive;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const AGENTS: [&str; 3] = ["bench1", "bench2", "bench3"];

/// A pool the load keeps drawing slices of (600M tokens a rolling minute,
/// slices of 1 %); the agent and group budgets are out of reach.
fn fleet() -> String {
    let mut f = String::from("[policy]\nterminate_grace = \"1s\"\n\n[pools.bench]\ntokens = { hard = \"600M\", per = \"min\" }\n");
    for a in AGENTS {
        f.push_str(&format!(
            "\n[[agents]]\nname = \"{a}\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000000\"]\npools = [\"bench\"]\n"
        ));
    }
    f
}

/// An etcd of the benchmark's own, killed by pid when dropped.
struct OwnEtcd(Child);

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_etcd(bin: &Path, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<(OwnEtcd, String), Error> {
    let (client, peer) = (free_port()?, free_port()?);
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let etcd = OwnEtcd(child);
    let endpoint = format!("127.0.0.1:{client}");
    let c = Etcd::new(vec![endpoint.clone()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.block_on(c.put("/bench/health", b"1", 0)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("etcd did not answer on {endpoint}; see {}", dir.join("etcd.log").display()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((etcd, endpoint))
}

fn revision(rt: &tokio::runtime::Runtime, etcd: &Etcd) -> Result<i64, Error> {
    Ok(rt.block_on(etcd.range("/allot/", true))?.0)
}

/// The cluster-mode daemon writes every group's slice on its group cgroup,
/// members or not: the empty groups and the root it leaves are removed.
fn remove_empty_root(name: &str) {
    let roots = allot_sys::Roots::host();
    let Ok(layout) = allot_sys::cgroup::Layout::discover(&roots) else { return };
    if let Ok(root) = allot_sys::cgroup::tree::CgroupRoot::create(&layout, &roots, name) {
        let _ = root.remove_empty_groups();
        let _ = root.remove();
    }
}

pub(crate) fn run(args: &BenchLoadArgs) -> Result<ExitCode, Error> {
    if args.clients.is_empty() || args.clients.contains(&0) || args.seconds == 0 {
        return Err("--clients needs counts above 0 and --seconds at least 1".into());
    }
    let bin = on_path("etcd").ok_or("bench cluster needs etcd on the PATH (Debian: apt-get install etcd-server)")?;
    let time = Duration::from_secs(args.seconds);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let (_etcd, endpoint) = start_etcd(&bin, dir.path(), &rt)?;
    let client = Etcd::new(vec![endpoint.clone()]);

    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir)?;
    let daemon = start_fleet_with(&single_dir, &fleet(), &AGENTS, "single", &[])?;
    let (sock, pid) = (daemon.sock.clone(), daemon.child.id());
    let mut rows = Vec::new();
    for &c in &args.clients {
        let d = drive(c, time, pid, |i, tally| pairs(&sock, AGENTS[i % AGENTS.len()], tally));
        check(&d, "single-host", c)?;
        rows.push(json!({"clients": c, "single": {"pairs_per_s": d.per_second, "cpu_us_per_pair": d.cpu_us, "failed": d.failed}}));
    }
    drop(daemon);

    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir)?;
    let extra: Vec<String> =
        ["--cluster", &format!("etcd://{endpoint}"), "--node", "bench", "--cluster-chunk", "1%"].iter().map(|s| (*s).to_owned()).collect();
    let daemon = start_fleet_with(&cluster_dir, &fleet(), &AGENTS, "cluster", &extra)?;
    let (sock, pid) = (daemon.sock.clone(), daemon.child.id());
    // Idle: what the node writes with no load (its record, keepalives are not writes).
    std::thread::sleep(Duration::from_secs(1));
    let r0 = revision(&rt, &client)?;
    std::thread::sleep(time);
    let idle = (revision(&rt, &client)? - r0) as f64 / time.as_secs_f64();
    for (row, &c) in rows.iter_mut().zip(&args.clients) {
        let r0 = revision(&rt, &client)?;
        let d = drive(c, time, pid, |i, tally| pairs(&sock, AGENTS[i % AGENTS.len()], tally));
        let writes = (revision(&rt, &client)? - r0) as f64 / time.as_secs_f64();
        check(&d, "cluster", c)?;
        let ratio = d.per_second / row["single"]["pairs_per_s"].as_f64().unwrap_or(f64::NAN);
        row["cluster"] = json!({"pairs_per_s": d.per_second, "cpu_us_per_pair": d.cpu_us, "failed": d.failed, "etcd_writes_per_s": writes, "ratio_to_single": ratio});
    }
    drop(daemon);
    remove_empty_root(&format!("allot-bench-cluster-{}", std::process::id()));
    if args.json {
        print(&format!("{}\n", json!({"etcd_writes_per_s_idle": idle})))?;
        for row in rows {
            print(&format!("{row}\n"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    print(&text(&rows, idle))?;
    Ok(ExitCode::SUCCESS)
}

fn text(rows: &[Value], idle: f64) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut t = String::from(
        "reserve + settle pairs per second through one daemon (3 agents drawing on a pool of 600M tokens a rolling minute), single-host mode vs cluster mode on an etcd of its own (slices of 1 %)\n",
    );
    t.push_str(&format!("etcd writes by the node, idle: {idle:.2}/s\n"));
    for r in rows {
        let (s, c) = (&r["single"], &r["cluster"]);
        t.push_str(&format!(
            "{:>4} clients: single {:>8.0} pairs/s ({:.1} us CPU a pair)   cluster {:>8.0} pairs/s ({:.1} us)   cluster/single {:.2}   etcd writes {:.2}/s   failed {}/{}\n",
            r["clients"].as_u64().unwrap_or(0),
            f(&s["pairs_per_s"]),
            f(&s["cpu_us_per_pair"]),
            f(&c["pairs_per_s"]),
            f(&c["cpu_us_per_pair"]),
            f(&c["ratio_to_single"]),
            f(&c["etcd_writes_per_s"]),
            s["failed"],
            c["failed"],
        ));
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_draws_every_agent_on_the_pool() {
        let f = crate::fleet::parse(&fleet()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.pools["bench"][&allot_core::Resource::Custom("tokens".into())].hard, 600_000_000);
        assert!(f.agents.iter().all(|a| a.spec.pools == vec!["bench".to_owned()]));
    }
}
