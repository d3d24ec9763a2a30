//! Cluster mode against a real etcd (Debian's `etcd-server`, or any `etcd`
//! on the PATH or in `ALLOT_ETCD`): three daemons on this machine (their own
//! sockets, states and cgroup names) share a pool budget and a group's
//! memory total. Skipped with the reason without etcd or cgroups; under
//! `ALLOT_REQUIRE_ETCD=1` (CI) a missing etcd fails.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{Daemon, call, cgroups_here, launch_with, running};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary, or why there is none.
fn etcd_binary() -> Option<PathBuf> {
    let p = std::env::var_os("ALLOT_ETCD")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file())));
    if p.is_none() {
        assert!(
            std::env::var("ALLOT_REQUIRE_ETCD").as_deref() != Ok("1"),
            "etcd required (ALLOT_REQUIRE_ETCD=1) but not found: apt-get install etcd-server"
        );
        eprintln!("skipped: needs etcd (apt-get install etcd-server, or ALLOT_ETCD=/path/to/etcd)");
    }
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An etcd cluster of `n` members on loopback ports, in a temp directory; killed on drop.
struct Etcd {
    bin: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<(String, u16, u16)>,
    children: Vec<Option<Child>>,
}

impl Etcd {
    fn start(bin: PathBuf, n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<(String, u16, u16)> = (0..n).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
        let mut e = Etcd { bin, dir, members, children: (0..n).map(|_| None).collect() };
        for i in 0..n {
            e.start_member(i);
        }
        e.wait_healthy();
        e
    }

    fn start_member(&mut self, i: usize) {
        let (name, client, peer) = self.members[i].clone();
        let initial: Vec<String> = self.members.iter().map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}")).collect();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&name))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &format!("allot-test-{}", std::process::id())])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("etcd://{}", self.members.iter().map(|(_, c, _)| format!("127.0.0.1:{c}")).collect::<Vec<_>>().join(","))
    }

    /// Wait until a put succeeds (a leader is elected).
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.members.iter().any(|(_, c, _)| {
                Command::new("curl")
                    .args([
                        "-sf",
                        "-m",
                        "2",
                        "-X",
                        "POST",
                        &format!("http://127.0.0.1:{c}/v3/kv/put"),
                        "-d",
                        r#"{"key":"aGVhbHRo","value":"MQ=="}"#,
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy; logs in {}", self.dir.path().display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill_member(i);
        }
    }
}

/// One test at a time: each runs three daemons and etcd, and the fault test's deadlines are timed.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A daemon in cluster mode as node `node`, its cgroup root named after the test (`test`) and the node.
fn node(etcd: &Etcd, fleet: &str, test: &str, node: &str, extra: &[&str]) -> Daemon {
    let mut args: Vec<String> = vec!["--cluster".into(), etcd.url(), "--node".into(), node.into()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    launch_with(tempfile::tempdir().unwrap(), fleet, &format!("{test}-{node}"), args)
}

/// Put `value` at `key` as any client of etcd could (no lease).
fn etcd_put(etcd: &Etcd, key: &str, value: &str) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let body = serde_json::json!({"key": b64(key), "value": b64(value)}).to_string();
    let url = format!("http://127.0.0.1:{}/v3/kv/put", etcd.members[0].1);
    let ok = Command::new("curl").args(["-sf", "-m", "5", "-X", "POST", &url, "-d", &body]).stdout(Stdio::null()).status().unwrap();
    assert!(ok.success(), "put {key}");
}

fn status(etcd: &Etcd) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(["cluster", "status", "--json", "--cluster", &etcd.url()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn total<'a>(status: &'a Value, label: &str) -> &'a Value {
    status["totals"].as_array().unwrap().iter().find(|t| t["total"] == label).unwrap_or_else(|| panic!("no total {label} in {status}"))
}

/// Reserve `amount` tokens for `agent` and settle it in full: Ok(true) spent, Ok(false) refused (retry after), Err: another answer.
fn spend(sock: &Path, agent: &str, amount: u64) -> Result<bool, String> {
    let (st, v) =
        call(sock, "POST", &format!("/v1/agents/{agent}/reservations"), &format!(r#"{{"resources":{{"tokens":{amount}}},"ttl":"1m"}}"#));
    match st {
        201 | 200 => {
            let id = v["id"].as_u64().unwrap();
            let (st, v) =
                call(sock, "POST", &format!("/v1/reservations/{id}/settle"), &format!(r#"{{"resources":{{"tokens":{amount}}}}}"#));
            assert_eq!(st, 200, "{v}");
            Ok(true)
        }
        429 => Ok(false),
        _ => Err(format!("{st} {v}")),
    }
}

fn pool_fleet(agent: &str) -> String {
    format!(
        r#"
[pools.team]
tokens = {{ hard = "100k", per = "h" }}

[[agents]]
name = "{agent}"
group = "standard_agent"
command = ["sleep", "600"]
pools = ["team"]
"#
    )
}

fn events(d: &Daemon, topic: &str) -> Vec<Value> {
    let out =
        Command::new(env!("CARGO_BIN_EXE_allot")).args(["events", "--json", "--topic", topic, "--socket"]).arg(&d.sock).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_cluster_budget_is_never_overspent_and_is_used_when_demand_exceeds_it() {
    let Some(bin) = etcd_binary() else { return };
    if !cgroups_here() {
        return;
    }
    let _one = serial();
    let etcd = Etcd::start(bin, 1);
    let nodes: Vec<Daemon> = ["a", "b", "c"].iter().map(|n| node(&etcd, &pool_fleet(&format!("w-{n}")), "budget", n, &[])).collect();
    for (d, n) in nodes.iter().zip(["a", "b", "c"]) {
        running(&d.sock, &format!("w-{n}"));
    }
    // Nine clients, three per node, spend 250 tokens at a time until each has been refused for 3 s on end.
    let spent: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .zip(["a", "b", "c"])
            .flat_map(|(d, n)| (0..3).map(move |_| (d.sock.clone(), format!("w-{n}"))))
            .map(|(sock, agent)| {
                s.spawn(move || {
                    let mut mine = 0u64;
                    let mut refused_since: Option<Instant> = None;
                    loop {
                        match spend(&sock, &agent, 250) {
                            Ok(true) => {
                                mine += 250;
                                refused_since = None;
                            }
                            Ok(false) => {
                                if refused_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(3) {
                                    return mine;
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let on_nodes: u64 = nodes.iter().map(|d| real_daemon::budget(&d.sock, "pool:team", "tokens")["spent"].as_u64().unwrap()).sum();
    let st = status(&etcd);
    let t = total(&st, "pool:team tokens");
    eprintln!("spent {spent} of 100000 over three nodes; ledger {t}");
    assert_eq!(on_nodes, spent, "the nodes counted what the clients spent");
    assert!(spent <= 100_000, "overspent: {spent}");
    assert!(spent >= 95_000, "only {spent} of 100000 used while demand exceeded it");
    assert!(t["granted"].as_u64().unwrap() <= 100_000, "{t}");
    assert_eq!(t["slices"].as_array().unwrap().len(), 3, "{t}");
}

/// The limits on the three nodes' group cgroups, read twice; `None` when they changed between the reads.
fn memory_limits(nodes: &[Daemon]) -> Option<Vec<u64>> {
    let read = || -> Vec<u64> {
        nodes
            .iter()
            .map(|d| {
                let dir = d.roots.iter().find(|r| r.to_string_lossy().contains("/memory/")).unwrap().join("mem");
                std::fs::read_to_string(dir.join("memory.limit_in_bytes")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
            })
            .collect()
    };
    let a = read();
    let b = read();
    (a == b).then_some(a)
}

#[test]
fn a_group_memory_total_is_held_by_the_sum_of_the_nodes_kernel_limits() {
    let Some(bin) = etcd_binary() else { return };
    if !cgroups_here() {
        return;
    }
    let v1 = real_daemon::cgroup_roots("x").iter().any(|r| r.to_string_lossy().contains("/memory/"));
    if !v1 {
        eprintln!("skipped: reads the v1 memory controller's group limit (this machine's layout)");
        return;
    }
    let _one = serial();
    let etcd = Etcd::start(bin, 1);
    const TOTAL: u64 = 600 << 20;
    // Each agent grows to 200 MiB in 10 MiB steps, holds, frees, again: slices grow and shrink, and
    // the three ask for more than the total (200 MiB each + a chunk of 60), so slices move between nodes
    // only as others return them. An agent that meets its node's limit may be OOM-killed: restarted.
    let script = "import time\nb=[]\nwhile True:\n    for i in range(20):\n        b.append(b'x'*(10<<20)); time.sleep(0.3)\n    time.sleep(3)\n    while b:\n        b.pop(); time.sleep(0.15)\n    time.sleep(1)\n";
    let fleet = |n: &str| {
        format!(
            r#"
[policy]
sample_interval = "250ms"

[groups.mem]
extends = "standard_agent"
totals = {{ memory = "600Mi" }}

[[agents]]
name = "m-{n}"
group = "mem"
command = ["python3", "-c", {script:?}]
restart = "on-failure"
max_restarts = 100
"#
        )
    };
    let nodes: Vec<Daemon> = ["a", "b", "c"].iter().map(|n| node(&etcd, &fleet(n), "mem", n, &["--cluster-chunk", "10%"])).collect();
    for (d, n) in nodes.iter().zip(["a", "b", "c"]) {
        running(&d.sock, &format!("m-{n}"));
    }
    let end = Instant::now() + Duration::from_secs(20);
    let (mut reads, mut changes, mut last, mut highest) = (0u64, 0u64, Vec::new(), 0u64);
    while Instant::now() < end {
        let Some(limits) = memory_limits(&nodes) else { continue };
        reads += 1;
        let sum: u64 = limits.iter().sum();
        assert!(sum <= TOTAL, "the nodes' limits {limits:?} sum to {sum} > {TOTAL}");
        highest = highest.max(sum);
        if limits != last {
            changes += 1;
            last = limits;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("{reads} consistent readings, {changes} grant changes seen, highest sum {highest} of {TOTAL}; last limits {last:?}");
    assert!(changes >= 10, "the slices hardly changed ({changes}): the test proves nothing");
    assert!(highest >= TOTAL / 100 * 95, "the total was never contended (highest sum {highest}): the test proves nothing");
}

#[test]
fn faults_etcd_members_die_and_return_and_a_daemon_is_killed() {
    let Some(bin) = etcd_binary() else { return };
    if !cgroups_here() {
        return;
    }
    let _one = serial();
    let mut etcd = Etcd::start(bin, 3);
    let ttl = ["--cluster-ttl", "6s", "--cluster-margin", "2s"];
    let mut nodes: Vec<Daemon> = ["a", "b", "c"].iter().map(|n| node(&etcd, &pool_fleet(&format!("w-{n}")), "faults", n, &ttl)).collect();
    for (d, n) in nodes.iter().zip(["a", "b", "c"]) {
        running(&d.sock, &format!("w-{n}"));
    }
    let spend_n = |d: &Daemon, agent: &str, n: u64| -> u64 {
        let mut ok = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        while ok < n && Instant::now() < deadline {
            if spend(&d.sock, agent, 1000).unwrap() {
                ok += 1;
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        ok
    };

    // One member killed: the cluster keeps granting (a's slice grows past its first chunk of 5000).
    etcd.kill_member(0);
    assert_eq!(spend_n(&nodes[0], "w-a", 12), 12, "node a could not grow its slice with one etcd member down");
    assert!(
        total(&status(&etcd), "pool:team tokens")["slices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["node"] == "a" && s["slice"].as_u64() >= Some(12_000))
    );

    // Every member stopped: the nodes keep their slices to their deadline, then refuse.
    for i in 1..3 {
        etcd.kill_member(i);
    }
    let stopped = Instant::now();
    let b = real_daemon::budget(&nodes[1].sock, "pool:team", "tokens");
    assert!(b["remaining"].as_u64().unwrap() >= 1000, "{b}");
    assert!(spend(&nodes[1].sock, "w-b", 1000).unwrap(), "b's slice holds before its deadline");
    std::thread::sleep(Duration::from_secs(6));
    for (d, n) in nodes.iter().zip(["a", "b", "c"]) {
        assert!(!spend(&d.sock, &format!("w-{n}"), 1).unwrap(), "{n} still grants past its deadline without etcd");
        let ev = events(d, "resource_management.cluster.degraded");
        assert!(!ev.is_empty(), "{n}: no cluster.degraded event");
        let v = real_daemon::budget(&d.sock, "pool:team", "tokens");
        assert_eq!(v["cap"], 0, "{n}: {v}");
    }
    eprintln!("all nodes at safe capacity {:?} after etcd stopped", stopped.elapsed());

    // etcd returns: service resumes (the same leases: etcd renews them on a new leader).
    for i in 0..3 {
        etcd.start_member(i);
    }
    etcd.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (d, n) in nodes.iter().zip(["a", "b", "c"]) {
        while events(d, "resource_management.cluster.recovered").is_empty() {
            assert!(Instant::now() < deadline, "{n} did not recover");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(spend_n(d, &format!("w-{n}"), 1), 1, "{n} does not grant after etcd returned");
    }

    // A daemon SIGKILLed: its slice stays until its lease expires, then leaves the slices (held for the budget's window).
    nodes[2].sigkill();
    let killed = Instant::now();
    let mut gone_at = None;
    while killed.elapsed() < Duration::from_secs(20) {
        let _ = spend(&nodes[0].sock, "w-a", 10);
        let st = status(&etcd);
        let t = total(&st, "pool:team tokens");
        let has_c = t["slices"].as_array().unwrap().iter().any(|s| s["node"] == "c");
        if !has_c {
            assert!(t["held"].as_array().unwrap().iter().any(|h| h["node"] == "c"), "c's budget slice must stay held: {t}");
            gone_at = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let gone_at = gone_at.expect("c's slice never left the ledger");
    eprintln!("c's slice left the ledger {gone_at:?} after SIGKILL (lease 6s)");
    assert!(gone_at >= Duration::from_secs(5), "c's slice was taken before its lease could expire: {gone_at:?}");
    // Its kernel totals went back to the pool.
    let st = status(&etcd);
    let mem = total(&st, "group standard_agent memory");
    assert!(mem["slices"].as_array().unwrap().iter().all(|s| s["node"] != "c"), "{mem}");
    assert!(mem["held"].as_array().unwrap().is_empty(), "{mem}");
    drop(nodes);
}

#[test]
fn migrate_moves_a_restartable_agent_to_the_node_with_room() {
    let Some(bin) = etcd_binary() else { return };
    if !cgroups_here() {
        return;
    }
    let _one = serial();
    let etcd = Etcd::start(bin, 1);
    // The agent takes 60 MiB over its 40 MiB hard limit on its first start only (a marker file says it ran).
    let marker_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(marker_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = marker_dir.path().join("ran");
    let script = format!(
        "import os,time\np={:?}\nbig=not os.path.exists(p)\nopen(p,'w').close()\nb=b'x'*(60<<20) if big else b''\ntime.sleep(600)\n",
        marker.display().to_string()
    );
    let fleet_a = format!(
        r#"
[policy]
sample_interval = "250ms"
terminate_grace = "1s"

[[agents]]
name = "mover"
group = "standard_agent"
command = ["python3", "-c", {script:?}]
restartable = true
limits.memory = {{ soft = "20Mi", hard = "40Mi", action = "migrate" }}

[[agents]]
name = "stays"
group = "standard_agent"
command = ["python3", "-c", "import time\nb=b'x'*(60<<20)\ntime.sleep(600)"]
limits.memory = {{ soft = "20Mi", hard = "40Mi", action = "migrate" }}
"#
    );
    // A record no live lease holds is no node: a fake one with all the room in the world is never chosen.
    etcd_put(&etcd, "/allot/nodes/ghost", r#"{"memory_available": 999999999999999}"#);
    let ttl = ["--cluster-ttl", "3s", "--cluster-margin", "1s"];
    // b first: a finds it in the cluster (its record, with its memory available) when mover goes over its limit.
    let b = node(&etcd, "", "migrate", "b", &ttl);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&etcd)["nodes"].as_array().unwrap().iter().all(|n| n["memory_available"].is_null()) {
        assert!(Instant::now() < deadline, "b never published its record");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut a = node(&etcd, &fleet_a, "migrate", "a", &ttl);
    // On b within 30 s: started there from a's definition.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.agent("mover")["state"] != "running" {
        assert!(
            Instant::now() < deadline,
            "mover never ran on b; on a: {}; {}",
            a.agent("mover"),
            call(&a.sock, "GET", "/v1/history?agent=mover", "").1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stopped on a (notice, grace, kill) with the move as its reason.
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.agent("mover")["state"] != "exited" {
        assert!(Instant::now() < deadline, "mover still on a: {}", a.agent("mover"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = a.agent("mover");
    assert!(gone["exit"].as_str().unwrap_or("").contains("migrated by allot to node b"), "{gone}");
    // Recorded on both nodes and in the cluster.
    let left = events(&a, "resource_management.cluster.migrated");
    assert!(left.iter().any(|e| e["data"]["stage"] == "left" && e["data"]["to"] == "b"), "{left:?}");
    let arrived = events(&b, "resource_management.cluster.migrated");
    assert!(
        arrived.iter().any(|e| e["data"]["stage"] == "arrived" && e["data"]["from"] == "a" && e["data"]["outcome"] == "success"),
        "{arrived:?}"
    );
    let st = status(&etcd);
    let stages: Vec<&str> =
        st["events"].as_array().unwrap().iter().filter(|e| e["agent"] == "mover").filter_map(|e| e["stage"].as_str()).collect();
    assert!(stages.contains(&"left") && stages.contains(&"arrived"), "{st}");
    let (_, history) = call(&a.sock, "GET", "/v1/history?agent=mover", "");
    let moved = history.as_array().unwrap().iter().find(|h| h["action"] == "migrate").cloned().unwrap_or(Value::Null);
    assert_eq!(moved["outcome"], "success", "{history}");
    assert!(moved["detail"].as_str().unwrap_or("").contains("moving to node b"), "{moved}");
    assert!(b.agent("mover")["quota"]["limits"]["memory"]["hard"] == 41_943_040, "its limits went with it: {}", b.agent("mover"));
    // An agent not marked restartable falls back to suspend, as without a cluster.
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.agent("stays")["state"] != "suspended" {
        assert!(Instant::now() < deadline, "stays was not suspended: {}", a.agent("stays"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.agent("stays")["state"], Value::Null, "a non-restartable agent never moves");

    // A request written by any client of etcd never starts root, nor a process of an unnamed user.
    let evil = |user: &str| {
        format!(
            r#"{{"agent":"evil{}","group":"standard_agent","priority":5,"command":["sleep","60"],{user}"from":"a","resource":"memory","usage":0,"memory":0}}"#,
            user.len()
        )
    };
    etcd_put(&etcd, "/allot/migrations/b/evil0", &evil(""));
    etcd_put(&etcd, "/allot/migrations/b/evil14", &evil(r#""user":[0,0],"#));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failed: Vec<Value> =
            events(&b, "resource_management.cluster.migrated").into_iter().filter(|e| e["data"]["outcome"] == "failure").collect();
        if failed.len() == 2 {
            let details: Vec<&str> = failed.iter().filter_map(|e| e["data"]["detail"].as_str()).collect();
            assert!(
                details.iter().any(|d| d.contains("never runs as root")) && details.iter().any(|d| d.contains("no user named")),
                "{details:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the forged requests were not refused: {failed:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for e in ["evil0", "evil14"] {
        assert_eq!(b.agent(e)["state"], Value::Null, "{e} was started");
    }

    // a restarted on the same state and fleet: mover runs on b, not again on a.
    a.stop();
    a.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.agent("mover")["state"], "exited", "{}", a.agent("mover"));
    assert_eq!(b.agent("mover")["state"], "running");
}
