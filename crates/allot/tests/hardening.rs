//! Hardening found by a hostile check against a real daemon: heavy reads
//! (analysis, reports) bounded in concurrency and in the rows they read,
//! and refusals that name what is wrong.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Samples stored for the agent before the daemon starts (every 250 ms, the last 21 hours).
const STORED: u64 = 300_000;

/// Store `STORED` samples of tokens of `agent` ending now, with their per-minute rollups.
fn fill(state: &Path, agent: &str) {
    let mut store = allot_store::Store::open(state).unwrap();
    let end = now_ms() - 1_000;
    let start = end - (STORED - 1) * 250;
    let value = |i: u64| 50_000_000 + (i % 400) * 10_000;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..STORED {
        batch.push((agent.to_owned(), "tokens".to_owned(), start + i * 250, value(i)));
        if batch.len() == 10_000 {
            store.put_samples(&batch).unwrap();
            batch.clear();
        }
    }
    store.put_samples(&batch).unwrap();
    let mut minute = (start / 60_000, Vec::new());
    for i in 0..STORED {
        let m = (start + i * 250) / 60_000;
        if m != minute.0 {
            store.put_rollup(agent, "tokens", &allot_store::rollup::summarize(minute.0, &minute.1).unwrap()).unwrap();
            minute = (m, Vec::new());
        }
        minute.1.push(value(i));
    }
    store.put_rollup(agent, "tokens", &allot_store::rollup::summarize(minute.0, &minute.1).unwrap()).unwrap();
}

/// The agent: asks for its own year-long report and analysis 6 times each at
/// once, and writes (status, Retry-After, body) of each answer to argv[1].
const READER: &str = r#"
import json, os, socket, sys, threading, time
def req(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["ALLOT_SOCKET"])
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    retry = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("retry-after:")]
    return {"path": path, "status": int(lines[0].split()[1]), "retry_after": retry[0] if retry else None,
            "body": body[:2000].decode(errors="replace")}
time.sleep(1.0)
paths = ["/v1/agents/reader/report?since=365d", "/v1/agents/reader/analysis?resource=tokens&window=365d"] * 6
out = [None] * len(paths)
barrier = threading.Barrier(len(paths))
def go(i):
    barrier.wait()
    out[i] = req(paths[i])
threads = [threading.Thread(target=go, args=(i,)) for i in range(len(paths))]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(out, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(1000)
"#;

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn heavy_reads_are_bounded_in_concurrency_and_rows() {
    if !real_daemon::cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    fill(&dir.path().join("state.db"), "reader");
    eprintln!("stored {STORED} samples in {:.1} s", t0.elapsed().as_secs_f64());
    let script = dir.path().join("reader.py");
    std::fs::write(&script, READER).unwrap();
    let results = dir.path().join("reader.json");
    let fleet = format!(
        "[policy]\nsample_interval = \"250ms\"\n\n[[agents]]\nname = \"reader\"\ngroup = \"standard_agent\"\nuser = \"root\"\ncommand = [\"python3\", \"{}\", \"{}\"]\n",
        script.display(),
        results.display()
    );
    let d = real_daemon::launch_in(dir, &fleet, "heavy");
    let rss_before = peak_rss(d.pid());

    // /healthz stays fast while the agent's heavy reads run.
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(180);
    while !results.exists() {
        assert!(Instant::now() < deadline, "the reader agent did not finish its reads");
        let t = Instant::now();
        assert_eq!(real_daemon::http(&d.sock, "GET", "/healthz", ""), (200, "ok\n".into()));
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let statuses: Vec<u64> = answers.iter().map(|a| a["status"].as_u64().unwrap()).collect();
    eprintln!("statuses {statuses:?}; slowest /healthz {slowest:?}");
    assert_eq!(answers.len(), 12);
    let busy: Vec<&Value> = answers.iter().filter(|a| a["status"] == 429).collect();
    let served = answers.iter().filter(|a| a["status"] == 200).count();
    assert!(!busy.is_empty(), "12 heavy reads at once: those over the limit are refused: {statuses:?}");
    // An agent holds at most HEAVY_READS - 1 of the permits: the last one stays the operator's.
    assert!(served >= allot::api::HEAVY_READS - 1, "as many as an agent's share are served: {statuses:?}");
    assert_eq!(busy.len() + served, 12, "{statuses:?}");
    for a in busy {
        assert_eq!(a["retry_after"], "1", "{a}");
        let body: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "busy", "{a}");
        assert!(body["error"]["message"].as_str().unwrap().contains("at once"), "{a}");
    }
    assert!(slowest < Duration::from_secs(1), "/healthz took {slowest:?} during the heavy reads");

    // A year-long report reads the per-minute rollups, not the 300,000 samples.
    let (st, body) = real_daemon::http(&d.sock, "GET", "/v1/agents/reader/report?since=365d", "");
    assert_eq!(st, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    let mem = r[0]["resources"].as_array().unwrap().iter().find(|x| x["resource"] == "tokens").unwrap().clone();
    let stored_minutes = STORED * 250 / 60_000;
    assert_eq!(mem["source"], "rollups", "{mem}");
    assert_eq!(mem["samples"].as_u64(), Some(STORED), "every stored sample counted: {mem}");
    let points = mem["points"].as_u64().unwrap();
    assert!(points <= stored_minutes + 3 && points <= 100_000, "one point a minute, within the cap: {mem}");
    assert_eq!((mem["min"].as_u64(), mem["max"].as_u64()), (Some(50_000_000), Some(50_000_000 + 399 * 10_000)), "{mem}");
    // The analysis reads the newest 100,000 samples of the window.
    let (st, body) = real_daemon::http(&d.sock, "GET", "/v1/agents/reader/analysis?resource=tokens&window=365d", "");
    assert_eq!(st, 200, "{body}");
    let a: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((a["samples"].as_u64(), a["truncated"].as_bool()), (Some(100_000), Some(true)), "{body}");
    let rss_after = peak_rss(d.pid());
    eprintln!("daemon peak RSS {} MB before the reads, {} MB after", rss_before >> 20, rss_after >> 20);
    let mut d = d;
    d.stop();
}

/// A request's status and its JSON body.
fn call(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (st, text) = real_daemon::http(sock, method, path, body);
    (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn short_analysis_windows_and_quota_changes_of_exited_agents_are_refused() {
    if !real_daemon::cgroups_here() {
        return;
    }
    // `first` exits at once and is forgotten from memory when `second` exits (one exited agent is kept).
    let fleet = "[policy]\nsample_interval = \"250ms\"\n\n[retention]\ninterval = \"1s\"\nforget_exited_beyond = 1\n\n\
                 [[agents]]\nname = \"first\"\ngroup = \"standard_agent\"\ncommand = [\"true\"]\n\n\
                 [[agents]]\nname = \"second\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"2\"]\n\n\
                 [[agents]]\nname = \"stays\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n";
    let d = real_daemon::launch(fleet, "refusals");

    // A window of zero, or shorter than the sample interval (250 ms), holds at most one sample.
    for window in ["0s", "100ms"] {
        let (st, v) = call(&d.sock, "GET", &format!("/v1/agents/stays/analysis?window={window}"), "");
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some("window")), "{window}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("sample interval"), "{v}");
    }
    let (st, v) = call(&d.sock, "GET", "/v1/agents/stays/analysis?window=1s", "");
    assert_eq!(st, 200, "{v}");

    // Both exited: `first` answers from its stored row, `second` from memory.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = call(&d.sock, "GET", "/v1/agents", "");
        let listed: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        if d.agent("second")["state"] == "exited" && !listed.contains(&"first") {
            break;
        }
        assert!(Instant::now() < deadline, "first not forgotten or second not exited: {listed:?} {}", d.agent("second"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let patch = r#"{"limits": {"memory": {"hard": "300Mi"}}}"#;
    for id in ["first", "second"] {
        assert_eq!(d.agent(id)["state"], "exited", "{}", d.agent(id));
        let (st, v) = call(&d.sock, "PATCH", &format!("/v1/agents/{id}/quota"), patch);
        assert_eq!((st, v["error"]["code"].as_str()), (409, Some("conflict")), "{id}: {v}");
        assert_eq!(v["error"]["message"], format!("agent {id} is exited"), "{id}: {v}");
    }
    assert_eq!(call(&d.sock, "PATCH", "/v1/agents/ghost/quota", patch).0, 404, "an agent never known");
    assert_eq!(call(&d.sock, "PATCH", "/v1/agents/stays/quota", patch).0, 200, "a running agent");
    let mut d = d;
    d.stop();
}

/// `allot up` of one sleeping agent with its default socket (`/run/allot/up-<pid>.sock` as root).
fn up(dir: &Path, tag: &str) -> (std::process::Child, std::path::PathBuf) {
    let fleet = dir.join(format!("{tag}.toml"));
    std::fs::write(&fleet, "[[agents]]\nname = \"sleeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["up", "--quiet", "--cgroup-name", &format!("allot-test-{}-{tag}", std::process::id()), "--state"])
        .arg(dir.join(format!("{tag}.db")))
        .arg(&fleet)
        .env("ALLOT_LOG", "warn")
        .spawn()
        .unwrap();
    let sock = Path::new("/run/allot").join(format!("up-{}.sock", child.id()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "allot up {tag} did not open {}", sock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, sock)
}

/// SIGTERM and wait.
fn stop(child: &mut std::process::Child) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(child.id() as i32).unwrap(), rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn allot_up_removes_the_socket_a_killed_run_left() {
    if !real_daemon::cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _guards: Vec<real_daemon::CgroupRootGuard> =
        ["killed", "live", "next"].iter().map(|t| real_daemon::CgroupRootGuard(format!("allot-test-{}-{t}", std::process::id()))).collect();
    let (mut killed, killed_sock) = up(dir.path(), "killed");
    let (mut live, live_sock) = up(dir.path(), "live");
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(killed_sock.exists(), "SIGKILL leaves the socket behind");
    let (mut next, next_sock) = up(dir.path(), "next");
    assert!(!killed_sock.exists(), "the stale socket of the killed run is removed at start");
    assert!(std::os::unix::net::UnixStream::connect(&live_sock).is_ok(), "the socket of a running allot up is untouched");
    stop(&mut next);
    stop(&mut live);
    assert!(!next_sock.exists() && !live_sock.exists(), "a clean stop removes its own socket");
    // The killed run could not remove its cgroup root's lock file: this test's, its holder gone.
    for lock in root_locks(&format!("allot-test-{}-killed", std::process::id())) {
        let _ = std::fs::remove_file(lock);
    }
}

/// The lock files of a cgroup root named `name` in `/run/allot` (one per root, named after its path).
fn root_locks(name: &str) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir("/run/allot") else { return Vec::new() };
    rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(&format!("_{name}.lock"))).collect()
}

#[test]
fn a_clean_stop_removes_the_cgroup_root_lock_file() {
    if !real_daemon::cgroups_here() {
        return;
    }
    let fleet = "[[agents]]\nname = \"sleeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n";
    let name = format!("allot-test-{}-cleanlock", std::process::id());
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    // Two daemons after each other on the same cgroup root name.
    for round in 0..2 {
        let mut d = real_daemon::launch(fleet, "cleanlock");
        let locks = root_locks(&name);
        assert_eq!(locks.len(), 1, "round {round}: one lock file while it runs: {locks:?}");
        assert_eq!(std::fs::read_to_string(&locks[0]).unwrap().trim(), d.pid().to_string(), "it holds our pid");
        d.stop();
        assert!(d.child.try_wait().unwrap().is_some_and(|s| s.success()), "round {round}: a clean stop");
        assert_eq!(root_locks(&name), Vec::<std::path::PathBuf>::new(), "round {round}: removed at a clean stop");
    }
}

/// SIGTERM sent the moment the socket accepts stops the daemon cleanly (exit
/// 0, socket removed). The handler was installed only when the loop started,
/// after the socket listened: a SIGTERM in between killed the process (found
/// by a CI run of `a_clean_stop_removes_the_cgroup_root_lock_file`).
#[test]
fn a_sigterm_as_soon_as_the_socket_accepts_is_a_clean_stop() {
    if !real_daemon::cgroups_here() {
        return;
    }
    let name = format!("allot-test-{}-earlyterm", std::process::id());
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, sock, _) = real_daemon::start_daemon(dir.path(), "", &name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "round {round}: no socket");
            std::thread::yield_now();
        }
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "round {round}: {status}");
        assert!(!sock.exists(), "round {round}: socket removed");
    }
}
