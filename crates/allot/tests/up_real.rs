//! `allot up` for real: the example fleet produces every kind of action on
//! this machine, and a governor killed with SIGKILL leaves an intact state
//! database and agents still under their kernel limits, which the next run
//! finds and stops. Needs root and cgroups (skipped with a reason otherwise,
//! except under ALLOT_REQUIRE_CGROUPS=1).
#![allow(clippy::unwrap_used)]

mod real_daemon;

use allot_store::Store;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The cgroup name for a test's run of `allot up`; None, the test skipped, where cgroups are unusable.
fn cgroup_name(test: &str) -> Option<String> {
    let roots = allot_sys::Roots::host();
    let ok = allot_sys::cgroup::Layout::discover(&roots).map_err(|e| e.to_string()).and_then(|l| {
        allot_sys::cgroup::tree::CgroupRoot::create(&l, &roots, &format!("allot-probe-{}-{test}", std::process::id()))
            .map_err(|e| e.to_string())
    });
    match ok {
        Ok(root) => {
            let _ = root.remove();
            Some(format!("allot-test-{}-{test}", std::process::id()))
        }
        Err(e) => {
            assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "ALLOT_REQUIRE_CGROUPS=1 but cgroups are unusable: {e}");
            eprintln!("skipped: cgroups unusable here: {e}");
            None
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A temporary directory for a run, and the path of the state database in it.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    (dir, state)
}

/// `allot up --quiet <args> --state <state> <fleet>`.
fn up(args: &[&str], state: &Path, fleet: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allot"));
    cmd.args(["up", "--quiet"]).args(args).arg("--state").arg(state).arg(fleet);
    cmd
}

/// Runs a command to its end and asserts that it succeeded; its output.
fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// An `[[agents]]` entry in the standard group running `sh -c script`.
fn agent(name: &str, script: &str, limits: &str) -> String {
    format!("\n[[agents]]\nname = \"{name}\"\ngroup = \"standard_agent\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\n{limits}\n")
}

/// `fleet.toml` in `dir`: these escalation delays, a sample every 250 ms, a cpu hog
/// over its hard limit (throttled) and one more agent.
fn write_fleet(dir: &Path, delays: &str, other: &str) -> PathBuf {
    let hog = agent("hog", "while :; do :; done", r#"limits.cpu = { soft = "100m", hard = "200m", action = "throttle" }"#);
    let fleet = dir.join("fleet.toml");
    std::fs::write(&fleet, format!("[policy]\ndelays = {delays}\nsample_interval = \"250ms\"\n{hog}{other}")).unwrap();
    fleet
}

#[test]
fn the_example_fleet_exercises_every_action_within_the_minute() {
    let Some(name) = cgroup_name("example") else {
        return;
    };
    let (dir, state) = scratch();
    let events = dir.path().join("ev.jsonl");
    succeeds(
        up(&["--for", "40s", "--cgroup-name", &name], &state, Path::new("examples/fleet.toml"))
            .arg("--events")
            .arg(&events)
            .current_dir(repo()),
    );
    let lines: Vec<Value> = std::fs::read_to_string(&events).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for l in &lines {
        assert!(l["seq"].as_u64().is_some() && l["at"].as_str().is_some_and(|s| s.ends_with('Z')) && l["topic"].is_string(), "{l}");
    }
    let topics: BTreeSet<&str> = lines.iter().filter_map(|l| l["topic"].as_str()).collect();
    for t in [
        "resource_management.quota.warning",
        "resource_management.alert.warning",
        "resource_management.alert.critical",
        "resource_management.enforcement.throttle",
        "resource_management.enforcement.suspend",
        "resource_management.enforcement.scale_down",
        "resource_management.enforcement.scale_down_met",
        "resource_management.enforcement.terminate",
        "resource_management.enforcement.migrate",
        "resource_management.enforcement.custom",
        "resource_management.degradation.plan",
        "resource_management.recovery.stage",
        "resource_management.agent.started",
        "resource_management.agent.exited",
    ] {
        assert!(topics.contains(t), "no {t} in {topics:?}");
    }
    let unmet = lines.iter().any(|l| {
        l["topic"] == "resource_management.enforcement.suspend"
            && l["data"]["detail"].as_str().is_some_and(|d| d.contains("scale_down unmet"))
    });
    assert!(unmet, "an unmet scale_down escalated to suspend");
    let history = Store::open_read_only(&state).unwrap().history(None).unwrap();
    assert!(!history.is_empty());
    for r in &history {
        assert!(["success", "failure", "cancelled", "fallback"].contains(&r.outcome.as_str()) && !r.detail.is_empty(), "{r:?}");
    }
    assert!(
        history.iter().any(|r| r.action == "throttle" && r.outcome == "success" && r.detail.contains("cpu.cfs_quota_us")),
        "a real cgroup write is recorded"
    );

    // Analytics ran (every 15 s in the example, and at the end) and a report can be drawn from the run.
    assert!(topics.contains("resource_management.recommendation"), "{topics:?}");
    let report = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(args).arg("--state").arg(&state).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let svg = report(&["report", "leaker", "--format", "svg"]);
    assert!(svg.starts_with("<svg") && svg.contains(r#"class="limit-hard""#) && svg.contains(r#"class="limit-soft""#), "limit lines");
    assert!(svg.contains(r#"class="action" data-action="throttle""#), "action markers");
    let html = report(&["report", "--all", "--format", "html"]);
    assert!(html.contains("<h2>doomed") && html.contains(r#"data-action="terminate""#) && html.contains(r#"class="limit-hard""#));
    let json: Value = serde_json::from_str(&report(&["report", "--format", "json"])).unwrap();
    let leaker = json.as_array().unwrap().iter().find(|a| a["agent"] == "leaker").unwrap();
    let mem = leaker["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "memory").unwrap();
    assert!(mem["p95"].as_u64().unwrap() > mem["hard"].as_u64().unwrap() && mem["violations"].as_u64().unwrap() >= 1, "{mem}");
    assert_eq!(mem["pattern"], "growing", "{mem}");
    let recs: Value = serde_json::from_str(&report(&["recommend", "leaker", "--json"])).unwrap();
    assert!(
        recs.as_array().unwrap().iter().any(|r| r["resource"] == "memory" && r["recommendation"]["kind"] == "increase_quota"),
        "{recs}"
    );
}

fn pids_of(state: &Path) -> Vec<(u32, Vec<PathBuf>)> {
    Store::open_read_only(state)
        .unwrap()
        .agents()
        .unwrap()
        .into_iter()
        .filter_map(|a| Some((a.pid?, a.cgroup.as_array()?.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect())))
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|b| allot_sys::proc::parse::stat(&b)).is_some_and(|s| s.state != b'Z')
}

#[test]
fn a_sigkilled_governor_leaves_limits_in_force_and_the_next_run_stops_its_agents() {
    let Some(name) = cgroup_name("sigkill") else {
        return;
    };
    // A SIGKILLed governor leaves its agents running: killed and removed however the test ends.
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    let (dir, state) = scratch();
    let sleeper = agent(
        "sleeper",
        "sleep 1000 & sleep 1000",
        r#"limits.processes = { soft = 5, hard = 8, burst = 12, burst_window = "5s", action = "suspend" }"#,
    );
    let fleet = write_fleet(dir.path(), r#"{ throttle = "1s" }"#, &sleeper);
    let mut gov = up(&["--for", "120s", "--cgroup-name", &name], &state, &fleet).stdout(Stdio::null()).spawn().unwrap();
    // Wait for the throttle to be recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = state.exists()
            && Store::open_read_only(&state)
                .ok()
                .and_then(|s| s.history(Some("hog")).ok())
                .is_some_and(|h| h.iter().any(|r| r.action == "throttle" && r.outcome == "success"));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no throttle recorded within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    gov.kill().unwrap(); // SIGKILL
    gov.wait().unwrap();

    // The state database is intact and readable.
    let store = Store::open_read_only(&state).unwrap();
    assert_eq!(store.schema_version().unwrap(), allot_store::Store::SCHEMA_VERSION);
    let last = store.last_seq().unwrap();
    assert!(last > 0 && store.events_since(0, 100_000).unwrap().len() as u64 == last);
    drop(store);
    // The agents still run, under their kernel limits.
    let left = pids_of(&state);
    assert_eq!(left.len(), 2);
    for (pid, _) in &left {
        assert!(alive(*pid), "agent {pid} died with its governor");
    }
    let dirs: Vec<PathBuf> = left.iter().flat_map(|(_, d)| d.clone()).collect();
    let quota = dirs.iter().find_map(|d| std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok().filter(|q| q.trim() != "-1"));
    let cpu_max = dirs.iter().find_map(|d| std::fs::read_to_string(d.join("cpu.max")).ok().filter(|q| !q.starts_with("max")));
    assert!(quota.is_some() || cpu_max.is_some(), "the hog's cpu limit is still in force: {dirs:?}");
    let mut pids_max: Vec<String> =
        dirs.iter().filter_map(|d| std::fs::read_to_string(d.join("pids.max")).ok()).map(|v| v.trim().to_owned()).collect();
    pids_max.sort();
    // The sleeper's at its burst (12); the hog's at its group's hard limit, since pids.max is always set.
    assert_eq!(pids_max, ["100", "12"], "pids.max still set on both agents");

    // The next run on the same state stops what the killed one left.
    succeeds(&mut up(&["--for", "2s", "--cgroup-name", &name], &state, &fleet));
    for (pid, _) in &left {
        assert!(!alive(*pid), "agent {pid} of the killed run still runs");
    }
    let store = Store::open_read_only(&state).unwrap();
    let recovered = store.events_since(last, 100_000).unwrap().into_iter().filter(|e| e.data["recovered"] == true).count();
    assert_eq!(recovered, 2);
    assert!(store.last_seq().unwrap() > last, "sequence numbers continue");
}

#[test]
fn without_cgroups_the_fallbacks_work_and_say_so() {
    let (dir, state) = scratch();
    let big = agent("big", "sleep 100 & sleep 100 & sleep 100 & wait", r#"limits.processes = { soft = 2, hard = 3, action = "suspend" }"#);
    let fleet = write_fleet(dir.path(), r#"{ throttle = "1s", suspend = "1s" }"#, &big);
    let out = succeeds(&mut up(&["--no-cgroups", "--for", "6s"], &state, &fleet));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cgroups (--no-cgroups given): process trees through /proc"), "{err}");
    let h = Store::open_read_only(&state).unwrap().history(None).unwrap();
    let throttle = h.iter().find(|r| r.agent == "hog" && r.action == "throttle" && r.outcome == "success").expect("hog throttled");
    assert!(throttle.detail.contains("duty cycle"), "{}", throttle.detail);
    let suspend = h.iter().find(|r| r.agent == "big" && r.action == "suspend").expect("big suspended");
    assert_eq!(suspend.outcome, "success");
    assert!(suspend.detail.contains("SIGSTOP to 4"), "{}", suspend.detail);
}

/// An agent's script: report tokens through `$ALLOT_SOCKET`, read its quota and compliance,
/// write what it got to argv[1] as JSON, and exit.
const SOCKET_CLIENT: &str = r#"
import json, os, socket, sys
def req(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["ALLOT_SOCKET"])
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)
me = os.environ["ALLOT_AGENT_ID"]
out = {"socket": os.environ["ALLOT_SOCKET"]}
out["usage"] = req("POST", f"/v1/agents/{me}/usage", b'{"resource": "tokens", "value": "1.2k"}')
out["quota"] = req("GET", f"/v1/agents/{me}/quota")
out["compliance"] = req("GET", f"/v1/agents/{me}/compliance")
out["other"] = req("GET", "/v1/agents/sleeper/quota")[0]
open(sys.argv[1] + ".tmp", "w").write(json.dumps(out))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"#;

#[test]
fn agents_under_allot_up_report_usage_and_read_their_quota_through_allot_socket() {
    let Some(name) = cgroup_name("socket") else {
        return;
    };
    let (dir, state) = scratch();
    // The agent runs as nobody (allot runs as root): it must reach its script and write its result.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, SOCKET_CLIENT).unwrap();
    let result = dir.path().join("client.json");
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "[policy]\nsample_interval = \"250ms\"\n\n[[agents]]\nname = \"reporter\"\ngroup = \"standard_agent\"\ncommand = [\"python3\", \"{}\", \"{}\"]\nlimits.tokens = {{ soft = \"5k/min\", hard = \"10k/min\" }}\n\n[[agents]]\nname = \"sleeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"3\"]\n",
            script.display(),
            result.display()
        ),
    )
    .unwrap();
    let out = succeeds(&mut up(&["--for", "30s", "--cgroup-name", &name], &state, &fleet));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    let sock = r["socket"].as_str().unwrap();
    assert!(stderr.contains(&format!("API on {sock}")), "allot up prints the socket: {stderr}");
    assert!(!Path::new(sock).exists(), "the socket is removed at exit: {sock}");
    assert_eq!(r["usage"][0], 200, "{r}");
    assert_eq!(r["usage"][1]["value"], 1200, "{r}");
    assert_eq!(r["quota"][0], 200, "{r}");
    assert_eq!(r["quota"][1]["limits"]["tokens"]["hard"], 10_000, "{r}");
    assert_eq!(r["compliance"][0], 200, "{r}");
    let tokens = r["compliance"][1]["resources"].as_array().unwrap().iter().find(|x| x["resource"] == "tokens").unwrap().clone();
    assert_eq!((tokens["usage"].as_u64(), tokens["status"].as_str()), (Some(1200), Some("ok")), "{r}");
    assert_eq!(r["other"], 403, "an agent reads only its own quota: {r}");
}

/// While `allot up` stops its fleet (the grace after the termination notice),
/// its API still answers: an agent's acknowledgement of the notice is
/// recorded at once, and starting an agent is refused (503) rather than
/// left to outlive the stop.
#[test]
fn the_api_answers_while_allot_up_stops_its_fleet() {
    let Some(name) = cgroup_name("stopping") else {
        return;
    };
    let (dir, state) = scratch();
    let sock = dir.path().join("up.sock");
    let fleet = dir.path().join("fleet.toml");
    let stubborn = agent("stubborn", "trap '' TERM; while :; do sleep 0.1; done", "");
    std::fs::write(&fleet, format!("[policy]\nterminate_grace = \"4s\"\nsample_interval = \"250ms\"\n{stubborn}")).unwrap();
    let sock_arg = sock.to_str().unwrap();
    let mut child =
        up(&["--cgroup-name", &name, "--socket", sock_arg], &state, &fleet).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _guard = real_daemon::CgroupRootGuard(name.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "allot up did not open its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    real_daemon::running(&sock, "stubborn");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the stop has begun: the notice is sent, the grace runs

    let t = Instant::now();
    let (st, v) = real_daemon::call(&sock, "POST", "/v1/agents/stubborn/ack", r#"{"seq": 1, "note": "saving and leaving"}"#);
    assert_eq!(st, 200, "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "answered during the grace, not after it: {:?}", t.elapsed());
    let (st, v) =
        real_daemon::call(&sock, "POST", "/v1/agents", r#"{"name": "late", "group": "standard_agent", "command": ["sleep", "60"]}"#);
    assert_eq!((st, v["error"]["code"].as_str()), (503, Some("unavailable")), "no agent is started while the fleet stops: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("stopping"), "{v}");

    let status = child.wait().unwrap();
    assert!(status.success(), "allot up exits 0 after SIGTERM");
    let store = Store::open_read_only(&state).unwrap();
    let acks: Vec<Value> = store
        .events_since(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.topic == allot_core::events::REQUEST_ACKNOWLEDGED)
        .map(|e| e.data)
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["note"], "saving and leaving");
    assert!(store.agent("late").unwrap().is_none(), "the refused agent was never registered");
}
