//! `allot daemon` on a temporary socket: operator reads and actions, the
//! authorization matrix by peer credentials (operator, an agent on itself,
//! an agent on another agent, a stranger), server-sent events with resume,
//! and the Prometheus metrics.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request over the socket: (status, body).
fn http(sock: &Path, method: &str, path: &str) -> (u16, String) {
    http_body(sock, method, path, "")
}

fn http_body(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    real_daemon::http(sock, method, path, body)
}

/// Only the status of a request (also of a stream that does not end).
fn status_line(sock: &Path, method: &str, path: &str) -> u16 {
    let s = UnixStream::connect(sock).unwrap();
    write!(&s, "{method} {path} HTTP/1.1\r\nHost: allot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The route of the table a matrix call ("POST /v1/agents/OWN/usage") belongs to.
fn route_of(call: &str) -> &'static allot::api::Route {
    let (method, path) = call.split_once(' ').unwrap();
    let path = path.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').collect();
    allot::api::ROUTES
        .iter()
        .find(|r| {
            let t: Vec<&str> = r.path.split('/').collect();
            r.method.name().eq_ignore_ascii_case(method)
                && t.len() == segs.len()
                && t.iter().zip(&segs).all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
        })
        .unwrap_or_else(|| panic!("{call} matches no route of the table"))
}

/// The `{id}` of a matrix call, if its route has one.
/// The status of a call the caller may make: 201 for a reservation made,
/// 404 for a reservation that is not there (or not the caller's), else 200.
fn allowed_status(call: &str) -> u64 {
    if call.contains("/v1/reservations/") {
        404
    } else if call.starts_with("POST") && call.ends_with("/reservations") {
        201
    } else {
        200
    }
}

fn path_id(call: &str) -> Option<String> {
    let route = route_of(call);
    let path = call.split_once(' ').unwrap().1.split('?').next().unwrap();
    route.path.split('/').zip(path.split('/')).find(|(t, _)| *t == "{id}").map(|(_, v)| v.to_owned())
}

struct Daemon {
    child: Child,
    sock: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// SIGTERM, and wait for the daemon to exit (its agents keep running).
    fn stop(&mut self) {
        let _ =
            rustix::process::kill_process(rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        real_daemon::cleanup_state(&self.dir.path().join("state.db"));
    }
}

/// Calls every route and records the statuses: run as an agent (with
/// ALLOT_SOCKET) or as a stranger. argv: output file, own id, other id.
const CLIENT: &str = r#"
import json, os, socket, sys, time
def req(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ.get("ALLOT_SOCKET") or sys.argv[4])
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    head = s.recv(64)
    s.close()
    return int(head.split()[1])
if os.environ.get("ALLOT_SOCKET"):
    time.sleep(1.5)
own, other = sys.argv[2], sys.argv[3]
usage = b'{"resource": "tokens", "value": 1}'
calls = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/v1/openapi.json"), ("GET", "/v1/agents"),
         ("POST", "/v1/agents", b'{"name": "z", "group": "standard_agent", "command": ["true"]}'),
         ("GET", f"/v1/agents/{own}"), ("GET", f"/v1/agents/{other}"), ("DELETE", f"/v1/agents/{other}"),
         ("POST", f"/v1/agents/{other}/suspend"), ("POST", f"/v1/agents/{own}/suspend"), ("POST", f"/v1/agents/{other}/resume"),
         ("POST", f"/v1/agents/{other}/terminate"), ("POST", f"/v1/agents/{other}/throttle?cpu=100m"), ("POST", f"/v1/agents/{other}/clear"),
         ("GET", f"/v1/agents/{own}/quota"), ("GET", f"/v1/agents/{other}/quota"), ("PATCH", f"/v1/agents/{own}/quota", b'{"limits": {}}'),
         ("POST", f"/v1/agents/{own}/usage", usage), ("POST", f"/v1/agents/{other}/usage", usage),
         ("POST", f"/v1/agents/{own}/ack", b'{"seq": 1}'), ("POST", f"/v1/agents/{other}/ack", b'{"seq": 1}'),
         ("POST", "/v1/adopt", b'{"name": "y", "group": "standard_agent", "pid": 1}'),
         ("GET", "/v1/events"), ("GET", "/v1/groups"), ("POST", "/v1/groups/g2", b'{}'), ("PUT", "/v1/groups/standard_agent", b'{}'),
         ("DELETE", "/v1/groups/heavy_computation_agent"), ("GET", "/v1/history"), ("GET", "/v1/host"), ("GET", "/metrics"),
         ("GET", f"/v1/agents/{own}/compliance"), ("GET", f"/v1/agents/{other}/compliance"),
         ("GET", f"/v1/agents/{own}/analysis?resource=memory&window=1h"), ("GET", f"/v1/agents/{other}/analysis"),
         ("GET", f"/v1/agents/{own}/recommendations"), ("GET", f"/v1/agents/{other}/recommendations"),
         ("GET", f"/v1/agents/{own}/report?since=1h&format=html"), ("GET", f"/v1/agents/{other}/report"),
         ("GET", "/v1/recommendations"), ("GET", "/v1/report"),
         ("POST", f"/v1/agents/{own}/reservations", b'{"resources": {"tokens": 1}}'),
         ("POST", f"/v1/agents/{other}/reservations", b'{"resources": {"tokens": 1}}'),
         ("GET", f"/v1/agents/{own}/budgets"), ("GET", f"/v1/agents/{other}/budgets"),
         ("POST", "/v1/reservations/999999/settle", b'{}'), ("DELETE", "/v1/reservations/999999"),
         ("GET", "/v1/budgets"), ("GET", "/v1/pools/p"), ("PUT", "/v1/pools/p", b'{"tokens": "1/min"}'), ("DELETE", "/v1/pools/p")]
out = {}
for c in calls:
    out[c[0] + " " + c[1].replace(own, "OWN").replace(other, "OTHER")] = req(*c)
open(sys.argv[1], "w").write(json.dumps(out))
time.sleep(1000)
"#;

fn start() -> Daemon {
    launch(tempfile::tempdir().unwrap())
}

/// Start a daemon on `dir` (a fresh one, or the state of a killed one).
fn launch(dir: tempfile::TempDir) -> Daemon {
    launch_with(dir, &[])
}

fn launch_with(dir: tempfile::TempDir, extra: &[String]) -> Daemon {
    // The client agent runs as nobody: it must reach its script, the socket and its result file.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let client = dir.path().join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    let results = dir.path().join("client.json");
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "[policy]\nsample_interval = \"250ms\"\n\n[[agents]]\nname = \"sleeper\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n\n[[agents]]\nname = \"client\"\ngroup = \"standard_agent\"\nuser = \"65534:65534\"\ncommand = [\"python3\", \"{}\", \"{}\", \"client\", \"sleeper\"]\nlimits.tokens = {{ hard = \"1k/min\" }}\n\n[[agents]]\nname = \"rootclient\"\ngroup = \"standard_agent\"\nuser = \"root\"\ncommand = [\"python3\", \"{}\", \"{}\", \"rootclient\", \"sleeper\"]\nlimits.tokens = {{ hard = \"1k/min\" }}\n",
            client.display(),
            results.display(),
            client.display(),
            dir.path().join("rootclient.json").display()
        ),
    )
    .unwrap();
    let sock = dir.path().join("allot.sock");
    let name = format!("allot-test-{}-{}", std::process::id(), dir.path().file_name().unwrap().to_string_lossy().trim_start_matches('.'));
    let child = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["daemon", "--cgroup-name", &name])
        .arg("--config")
        .arg(&fleet)
        .arg("--socket")
        .arg(&sock)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .args(extra)
        .env("ALLOT_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(sock.exists() && UnixStream::connect(&sock).is_ok()) {
        assert!(Instant::now() < deadline, "the daemon did not open its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child, sock, dir }
}

#[test]
fn operator_agents_and_strangers_get_what_they_may() {
    let d = start();
    assert_eq!(http(&d.sock, "GET", "/healthz"), (200, "ok\n".into()));
    assert_eq!(http(&d.sock, "GET", "/readyz").0, 200);
    // The operator (the socket's owner: this test) sees both agents.
    let (st, body) = http(&d.sock, "GET", "/v1/agents");
    assert_eq!(st, 200, "{body}");
    let agents: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 3);
    let (st, body) = http(&d.sock, "GET", "/v1/agents/nobody-here");
    assert_eq!(st, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "not_found");

    // Suspend and resume take effect and are reported.
    let (st, body) = http(&d.sock, "POST", "/v1/agents/sleeper/suspend");
    assert_eq!(st, 200, "{body}");
    let s: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "suspended");
    let (st, _) = http(&d.sock, "POST", "/v1/agents/sleeper/resume");
    assert_eq!(st, 200);
    let s: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "running");
    assert_eq!(http(&d.sock, "POST", "/v1/agents/sleeper/explode").0, 404);
    // A known route with a method it does not take: 405 with the JSON error shape too.
    let (st, body) = http(&d.sock, "DELETE", "/healthz");
    assert_eq!(st, 405);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "method_not_allowed", "{body}");

    // An agent on itself, on another agent, and trying an action.
    let results = d.dir.path().join("client.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !results.exists() {
        assert!(Instant::now() < deadline, "the client agent did not report");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    // The authorization matrix over every route of the table: the client agent (uid 65534) on
    // itself and on another agent, and a stranger (uid 65534, no agent). What each may do comes
    // from the route table's access rules; every route of the table is called.
    assert_eq!(r.as_object().unwrap().len(), 50, "{r}");
    for route in allot::api::ROUTES {
        assert!(
            r.as_object().unwrap().keys().any(|k| route_of(k).path == route.path && route_of(k).method == route.method),
            "{} {} is not in the matrix",
            route.method.name(),
            route.path
        );
    }
    let me = allot::api::Caller::Agent("OWN".into());
    for (call, status) in r.as_object().unwrap() {
        let route = route_of(call);
        let want = if route.access.allows(&me, path_id(call).as_deref()) { allowed_status(call) } else { 403 };
        assert_eq!(status.as_u64(), Some(want), "agent: {call}");
    }
    // An agent running as root (asked for by name) is still that agent, never the operator:
    // the same matrix, on itself and on another agent.
    let root_results = d.dir.path().join("rootclient.json");
    while !root_results.exists() || std::fs::read_to_string(&root_results).unwrap().is_empty() {
        assert!(Instant::now() < deadline + Duration::from_secs(10), "the root client agent did not report");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&root_results).unwrap()).unwrap();
    assert_eq!(r.as_object().unwrap().len(), 50, "{r}");
    for (call, status) in r.as_object().unwrap() {
        let want = if route_of(call).access.allows(&me, path_id(call).as_deref()) { allowed_status(call) } else { 403 };
        assert_eq!(status.as_u64(), Some(want), "agent running as root: {call}");
    }
    let listed: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents").1).unwrap();
    let marks: Vec<(String, bool)> =
        listed.as_array().unwrap().iter().map(|a| (a["id"].as_str().unwrap().to_owned(), a["root"] == true)).collect();
    assert!(marks.contains(&("rootclient".into(), true)) && marks.contains(&("sleeper".into(), false)), "root is marked: {marks:?}");
    // The operator is refused nothing (calls on an agent and a group that do not exist).
    for route in allot::api::ROUTES {
        let path = route.path.replace("{id}", "ghost").replace("{name}", "ghost_group");
        let st = status_line(&d.sock, &route.method.name().to_uppercase(), &path);
        assert!(st != 403 && st != 401, "operator: {} {path} -> {st}", route.method.name());
    }
    let s: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "running", "the agent's actions were refused");
    if rustix::process::geteuid().is_root() {
        let stranger_out = d.dir.path().join("stranger.json");
        let out = Command::new("python3")
            .arg(d.dir.path().join("client.py"))
            .arg(&stranger_out)
            .args(["client", "sleeper"])
            .arg(&d.sock)
            .uid(65534)
            .gid(65534)
            .env_remove("ALLOT_SOCKET")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stranger_out.exists() || std::fs::read_to_string(&stranger_out).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the stranger did not report");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut out = out;
        let _ = out.kill();
        let _ = out.wait();
        let st: Value = serde_json::from_str(&std::fs::read_to_string(&stranger_out).unwrap()).unwrap();
        for (call, status) in st.as_object().unwrap() {
            let want = if route_of(call).access.allows(&allot::api::Caller::Stranger, path_id(call).as_deref()) { 200 } else { 403 };
            assert_eq!(status.as_u64(), Some(want), "stranger: {call}");
        }
    }

    // The OpenAPI document lists every route.
    let (st, body) = http(&d.sock, "GET", "/v1/openapi.json");
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    for r in allot::api::ROUTES {
        assert!(doc["paths"][r.path][r.method.name()].is_object(), "{} {} missing from the OpenAPI document", r.method.name(), r.path);
    }

    // Quotas change at run time, in the kernel at once.
    let (st, body) = http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"processes": {"hard": 30, "burst": 40}}}"#);
    assert_eq!(st, 200, "{body}");
    let q: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(q["limits"]["processes"]["burst"], 40);
    let store = allot_store::Store::open_read_only(&d.dir.path().join("state.db")).unwrap();
    let dirs = store.agent("sleeper").unwrap().unwrap().cgroup;
    let pids_max = dirs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| std::fs::read_to_string(Path::new(d.as_str().unwrap()).join("pids.max")).ok())
        .next();
    if let Some(v) = pids_max {
        assert_eq!(v.trim(), "40", "pids.max follows the new burst");
    }
    // Bad bodies get 4xx errors that name what is wrong.
    let (st, body) = http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"memory": {"hard": "12XB"}}}"#);
    assert_eq!(st, 422);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["field"], "limits.memory.hard");
    let (st, body) = http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"memory": {"soft": "900M"}}}"#);
    assert_eq!(st, 422, "soft above hard: {body}");
    let (st, body) = http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limitz": {}}"#);
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("limitz"), "{body}");
    assert_eq!(http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", "{not json").0, 400);
    assert_eq!(
        http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", &format!("{{\"limits\": {{}}, \"pad\": \"{}\"}}", "x".repeat(100_000))).0,
        413
    );
    // Usage of a custom resource, reported.
    let (st, body) = http_body(&d.sock, "POST", "/v1/agents/sleeper/usage", r#"{"resource": "tokens", "value": "1.5k"}"#);
    assert_eq!(st, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["value"], 1500);
    assert_eq!(http_body(&d.sock, "POST", "/v1/agents/sleeper/usage", r#"{"resource": "Bad Name", "value": 1}"#).0, 422);

    // The CLI client.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(args).arg("--socket").arg(&d.sock).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = cli(&["ps", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let ps: Value = serde_json::from_str(&out).unwrap();
    for a in ps.as_array().unwrap() {
        for k in ["id", "group", "state", "pids", "usage"] {
            assert!(!a[k].is_null(), "{k} in {a}");
        }
    }
    assert_eq!(cli(&["suspend", "sleeper"]).0, Some(0));
    let (code, out, err) = cli(&["history", "sleeper", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().iter().any(|r| r["action"] == "suspend"), "{out}");
    assert_eq!(cli(&["resume", "sleeper"]).0, Some(0));
    let (code, out, err) = cli(&["quota", "set", "sleeper", "memory.hard=400M", "memory.soft=300M"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["limits"]["memory"]["hard"], 400_000_000u64);
    let (code, _, err) = cli(&["quota", "set", "sleeper", "memory.hard=lots"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("limits.memory.hard"), "{err}");
    let (code, _, err) = cli(&["suspend", "ghost"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(["ps", "--socket"]).arg(d.dir.path().join("nothing.sock")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no allot daemon answers at"), "{out:?}");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["events", "--follow", "--json", "--socket"])
        .arg(&d.sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(follow.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["seq"], 1, "{first}");

    // Start an agent through the API, throttle and clear it, stop it.
    let (st, body) = http_body(
        &d.sock,
        "POST",
        "/v1/agents",
        r#"{"name": "late", "group": "lightweight_agent", "command": ["sleep", "300"], "limits": {"memory": {"hard": "80M"}}}"#,
    );
    assert_eq!(st, 201, "{body}");
    let late: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/late").1).unwrap();
    assert_eq!((late["state"].as_str(), late["quota"]["limits"]["memory"]["hard"].as_u64()), (Some("running"), Some(80_000_000)), "{late}");
    assert_eq!(http_body(&d.sock, "POST", "/v1/agents", r#"{"name": "late", "group": "lightweight_agent", "command": ["true"]}"#).0, 409);
    let (st, body) = http_body(&d.sock, "POST", "/v1/agents", r#"{"name": "x y", "group": "lightweight_agent", "command": ["true"]}"#);
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["error"]["field"].as_str()), (422, Some("name")));
    assert_eq!(http_body(&d.sock, "POST", "/v1/agents", r#"{"name": "g", "group": "nope", "command": ["true"]}"#).0, 422);
    assert_eq!(http(&d.sock, "POST", "/v1/agents/late/throttle?cpu=150m").0, 200);
    assert_eq!(serde_json::from_str::<Value>(&http(&d.sock, "GET", "/v1/agents/late").1).unwrap()["state"], "throttled");
    assert_eq!(http(&d.sock, "POST", "/v1/agents/late/throttle?cpu=lots").0, 422);
    assert_eq!(http(&d.sock, "POST", "/v1/agents/late/clear").0, 200);
    assert_eq!(http(&d.sock, "DELETE", "/v1/agents/late").0, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/late").1).unwrap();
        if v["state"] == "exited" {
            assert!(v["exit"].as_str().unwrap().contains("terminated by the operator"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["run", "--name", "quick", "--group", "lightweight_agent", "--wait", "--socket"])
        .arg(&d.sock)
        .args(["--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    let (code, out, err) =
        (run.status.code(), String::from_utf8_lossy(&run.stdout).into_owned(), String::from_utf8_lossy(&run.stderr).into_owned());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("quick: started") && out.contains("exit status 3"), "{out}");

    // Groups, history and host.
    let (st, body) = http(&d.sock, "GET", "/v1/groups");
    assert_eq!(st, 200);
    let gs: Value = serde_json::from_str(&body).unwrap();
    let standard = gs.as_array().unwrap().iter().find(|g| g["name"] == "standard_agent").unwrap();
    assert!(standard["members"].as_array().unwrap().iter().any(|m| m == "sleeper"), "{standard}");
    let tiny = r#"{"extends": "lightweight_agent", "limits": {"memory": {"soft": "40M", "hard": "60M"}}}"#;
    let (st, body) = http_body(&d.sock, "POST", "/v1/groups/tiny", tiny);
    assert_eq!(st, 201, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["limits"]["memory"]["hard"], 60_000_000);
    assert_eq!(http_body(&d.sock, "POST", "/v1/groups/tiny", tiny).0, 409);
    let (st, body) = http_body(
        &d.sock,
        "PUT",
        "/v1/groups/tiny",
        r#"{"extends": "lightweight_agent", "limits": {"memory": {"soft": "90M", "hard": "60M"}}}"#,
    );
    assert_eq!(st, 422, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]["field"].as_str().unwrap().contains("limits.memory"), "{body}");
    assert_eq!(http_body(&d.sock, "PUT", "/v1/groups/ghost", tiny).0, 404);
    assert_eq!(http(&d.sock, "DELETE", "/v1/groups/standard_agent").0, 409, "has members");
    assert_eq!(http(&d.sock, "DELETE", "/v1/groups/tiny").0, 204);
    let (st, body) = http(&d.sock, "GET", "/v1/history?agent=sleeper");
    assert_eq!(st, 200);
    assert!(serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().iter().all(|r| r["agent"] == "sleeper"));
    let (st, body) = http(&d.sock, "GET", "/v1/host");
    assert_eq!(st, 200, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["resources"]["memory"]["available"].is_u64(), "{body}");

    // Acknowledging a request.
    let (st, body) = http_body(&d.sock, "POST", "/v1/agents/sleeper/ack", r#"{"seq": 1, "note": "freeing caches"}"#);
    assert_eq!(st, 200, "{body}");
    assert_eq!(http_body(&d.sock, "POST", "/v1/agents/nobody/ack", r#"{"seq": 1}"#).0, 404);

    // Adopt a process this test started, moving it into a cgroup.
    let mut stray = Command::new("sleep").arg("300").spawn().unwrap();
    let (code, out, err) = cli(&["adopt", &stray.id().to_string(), "--name", "stray", "--group", "lightweight_agent", "--move"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("adopted pid"), "{out}");
    let v: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/stray").1).unwrap();
    assert!(v["pids"].as_array().unwrap().iter().any(|p| p.as_u64() == Some(u64::from(stray.id()))), "{v}");
    let (st, body) = http_body(&d.sock, "POST", "/v1/adopt", r#"{"name": "ghost", "group": "lightweight_agent", "pid": 4000000}"#);
    assert_eq!(st, 422, "{body}");
    assert_eq!(http(&d.sock, "DELETE", "/v1/agents/stray").0, 200);
    let status = stray.wait().unwrap();
    assert!(!status.success(), "the adopted process was stopped");

    // Metrics in Prometheus text format.
    let (st, m) = http(&d.sock, "GET", "/metrics");
    assert_eq!(st, 200);
    assert!(
        m.contains("# TYPE allot_agent_usage gauge")
            && m.contains("allot_agent_usage{agent=\"sleeper\",resource=\"memory\",unit=\"bytes\"}"),
        "{m}"
    );
    // Parsed with a Prometheus text-format parser.
    let scrape = prometheus_parse::Scrape::parse(m.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let has = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    assert!(has("allot_agent_usage", &[("agent", "sleeper"), ("resource", "memory")]), "{m}");
    assert!(has("allot_agent_limit", &[("agent", "sleeper"), ("resource", "memory"), ("kind", "hard")]), "{m}");
    assert!(has("allot_agent_up", &[("agent", "sleeper"), ("state", "running")]), "{m}");
    assert!(has("allot_group_usage", &[("group", "standard_agent"), ("resource", "memory")]), "{m}");
    assert!(has("allot_enforcement_total", &[("agent", "sleeper"), ("action", "suspend"), ("outcome", "success")]), "{m}");
    assert!(has("allot_governor_ticks_total", &[]) && has("allot_events_total", &[]), "{m}");
    assert!(scrape.samples.iter().all(|s| s.metric.starts_with("allot_")));

    // Server-sent events, resumed from a sequence number.
    let mut s = UnixStream::connect(&d.sock).unwrap();
    write!(s, "GET /v1/events?since=0&topic=resource_management.enforcement.* HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s);
    let mut ids = Vec::new();
    let mut line = String::new();
    while ids.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(id) = line.trim().strip_prefix("id:") {
            ids.push(id.trim().parse::<u64>().unwrap());
        }
        if line.starts_with("event:") {
            assert!(line.contains("resource_management.enforcement."), "{line}");
        }
    }
    assert_eq!(ids.len(), 2, "suspend and restore events");
    let mut s = UnixStream::connect(&d.sock).unwrap();
    write!(s, "GET /v1/events?topic=resource_management.enforcement.* HTTP/1.1\r\nHost: a\r\nLast-Event-ID: {}\r\n\r\n", ids[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s);
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if let Some(id) = line.trim().strip_prefix("id:") {
            assert_eq!(id.trim().parse::<u64>().unwrap(), ids[1], "resumes after the last seen event");
            break;
        }
    }
}

#[test]
fn a_killed_daemon_is_restarted_and_takes_its_agents_over() {
    let mut d = start();
    let deadline = Instant::now() + Duration::from_secs(10);
    let before: Value = loop {
        let v: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/sleeper").1).unwrap();
        if !v["pids"].as_array().unwrap().is_empty() && v["usage"]["memory"].is_u64() {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (st, _) = http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"processes": {"hard": 30, "burst": 44}}}"#);
    assert_eq!(st, 200);
    // A suspension pending when the daemon dies: a custom resource over its hard limit (suspend after 5 min).
    let (st, body) =
        http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"tokens": {"soft": 5, "hard": 10, "action": "suspend"}}}"#);
    assert_eq!(st, 200, "{body}");
    let (st, body) = http_body(&d.sock, "POST", "/v1/agents/sleeper/usage", r#"{"resource": "tokens", "value": 50}"#);
    assert_eq!(st, 200, "{body}");
    let store = allot_store::Store::open_read_only(&d.dir.path().join("state.db")).unwrap();
    assert!(store.history(Some("sleeper")).unwrap().iter().any(|r| r.action == "suspend (scheduled)"), "a suspension is pending");
    let last = store.last_seq().unwrap();
    drop(store);
    // SIGKILL: no chance to stop anything.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let pids: Vec<u64> = before["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    for p in &pids {
        assert!(Path::new(&format!("/proc/{p}")).exists(), "agent process {p} died with the daemon");
    }
    // A new daemon on the same state takes the agents over.
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d); // stops nothing: the killed daemon is gone and the new temp dir holds no state
    let d2 = launch(dir);
    let after: Value = serde_json::from_str(&http(&d2.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(after["state"], "running", "{after}");
    let now: Vec<u64> = after["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(now, pids, "the same processes, not new ones");
    assert_eq!(after["quota"]["limits"]["processes"]["burst"], 44, "the changed quota survived");
    let dirs = allot_store::Store::open_read_only(&d2.dir.path().join("state.db")).unwrap().agent("sleeper").unwrap().unwrap().cgroup;
    if let Some(v) =
        dirs.as_array().unwrap().iter().find_map(|d| std::fs::read_to_string(Path::new(d.as_str().unwrap()).join("pids.max")).ok())
    {
        assert_eq!(v.trim(), "44", "still limited in the kernel");
    }
    let store = allot_store::Store::open_read_only(&d2.dir.path().join("state.db")).unwrap();
    let events = store.events_since(last, 10_000).unwrap();
    assert!(events.iter().any(|e| e.topic == "resource_management.agent.readopted" && e.agent.as_deref() == Some("sleeper")), "{events:?}");
    assert_eq!(events[0].seq, last + 1, "sequence numbers continue");
    // The pending suspension is resumed with its deadline, not cancelled nor lost.
    assert!(
        events.iter().any(|e| e.topic == "resource_management.enforcement.resumed" && e.data["action"] == "suspend"),
        "the scheduled suspension is resumed: {events:?}"
    );
    let h = store.history(Some("sleeper")).unwrap();
    assert!(!h.iter().any(|r| r.action == "suspend" && r.outcome == "cancelled"), "{h:?}");
    // The first fresh report finds the violation cleared (reports add within the window: the
    // limit is raised above the spend first): now it is cancelled, for that reason.
    let (st, body) = http_body(&d2.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"tokens": {"soft": 500, "hard": 1000}}}"#);
    assert_eq!(st, 200, "{body}");
    let (st, body) = http_body(&d2.sock, "POST", "/v1/agents/sleeper/usage", r#"{"resource": "tokens", "value": 1}"#);
    assert_eq!(st, 200, "{body}");
    let h = store.history(Some("sleeper")).unwrap();
    assert!(h.iter().any(|r| r.action == "suspend" && r.outcome == "cancelled" && r.detail.contains("cleared")), "{h:?}");
    // Still governed: suspend and resume work on the adopted agent.
    assert_eq!(http(&d2.sock, "POST", "/v1/agents/sleeper/suspend").0, 200);
    assert_eq!(http(&d2.sock, "POST", "/v1/agents/sleeper/resume").0, 200);
}

/// The kernel's freeze and cpu-quota files of an agent (v2 core `cgroup.freeze`, else v1 `freezer.state`).
fn kernel_holds(state: &Path, agent: &str) -> (Option<bool>, Option<String>) {
    let dirs = allot_store::Store::open_read_only(state).unwrap().agent(agent).unwrap().unwrap().cgroup_dirs();
    let frozen = dirs.iter().find_map(|d| {
        std::fs::read_to_string(d.join("cgroup.freeze"))
            .map(|v| v.trim() == "1")
            .or_else(|_| std::fs::read_to_string(d.join("freezer.state")).map(|v| v.trim() == "FROZEN"))
            .ok()
    });
    let quota = dirs.iter().find_map(|d| std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok()).map(|q| q.trim().to_owned());
    (frozen, quota)
}

#[test]
fn operator_holds_survive_a_daemon_restart_and_the_kernel_agrees() {
    // Found by the hostile check: after a restart the API said "running" with no holders while
    // the kernel still had the operator's freeze and throttle, and resume changed nothing.
    let mut d = start();
    assert_eq!(http(&d.sock, "POST", "/v1/agents/sleeper/suspend").0, 200);
    assert_eq!(http(&d.sock, "POST", "/v1/agents/sleeper/throttle?cpu=50m").0, 200);
    d.stop(); // SIGTERM: the daemon stops alone, its agents keep running
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d2 = launch(dir);
    let state = d2.dir.path().join("state.db");
    let s: Value = serde_json::from_str(&http(&d2.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "suspended", "{s}");
    assert_eq!(s["held_by"]["freeze"], serde_json::json!(["operator"]), "{s}");
    assert_eq!(s["held_by"]["throttle"], serde_json::json!(["operator"]), "{s}");
    let (frozen, quota) = kernel_holds(&state, "sleeper");
    if cgroups_in_use(&state) {
        assert_eq!(frozen, Some(true), "still frozen in the kernel");
        assert_eq!(quota.as_deref(), Some("5000"), "still throttled in the kernel");
    }
    let (st, body) = http(&d2.sock, "POST", "/v1/agents/sleeper/resume");
    assert_eq!(st, 200, "{body}");
    let s: Value = serde_json::from_str(&http(&d2.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "running", "{s}");
    if cgroups_in_use(&state) {
        assert_eq!(kernel_holds(&state, "sleeper"), (Some(false), Some("-1".to_owned())), "thawed and unthrottled in the kernel");
    }
}

/// Whether the daemon put its agents in cgroups (it says so unless the host has none).
fn cgroups_in_use(state: &Path) -> bool {
    let used = !allot_store::Store::open_read_only(state).unwrap().agent("sleeper").unwrap().unwrap().cgroup_dirs().is_empty();
    if !used && std::env::var_os("ALLOT_REQUIRE_CGROUPS").is_some() {
        panic!("ALLOT_REQUIRE_CGROUPS is set but the daemon runs without cgroups");
    }
    used
}

#[test]
fn arbitrary_bodies_get_4xx_never_a_crash() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let d = start();
    // Every route: those with bodies on a real agent, the actions on an agent that does not exist.
    let routes = [
        ("POST", "/v1/agents"),
        ("PATCH", "/v1/agents/sleeper/quota"),
        ("POST", "/v1/agents/sleeper/usage"),
        ("POST", "/v1/agents/sleeper/ack"),
        ("POST", "/v1/adopt"),
        ("POST", "/v1/groups/fz"),
        ("PUT", "/v1/groups/standard_agent"),
        ("DELETE", "/v1/groups/nonexistent"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/ghost"),
        ("DELETE", "/v1/agents/ghost"),
        ("POST", "/v1/agents/ghost/suspend"),
        ("POST", "/v1/agents/ghost/resume"),
        ("POST", "/v1/agents/ghost/terminate"),
        ("POST", "/v1/agents/ghost/throttle?cpu=100m"),
        ("POST", "/v1/agents/ghost/clear"),
        ("GET", "/v1/agents/ghost/quota"),
        ("GET", "/v1/groups"),
        ("GET", "/v1/history"),
        ("GET", "/v1/host"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/no/such/route"),
    ];
    let body = prop_oneof![
        ".{0,120}",
        "[{}\\[\\]\":,0-9a-z .-]{0,120}",
        ("[a-z_]{1,12}", "[a-z0-9\"{}:.-]{0,20}").prop_map(|(k, v)| format!(r#"{{"limits": {{"memory": {{"{k}": "{v}"}}}}}}"#)),
        ("[a-z_ ]{0,12}", "[a-zA-Z0-9.%/-]{0,12}").prop_map(|(r, v)| format!(r#"{{"resource": "{r}", "value": "{v}"}}"#)),
    ];
    let mut runner = TestRunner::new(Config { cases: 500, failure_persistence: None, ..Config::default() });
    runner
        .run(&(0..routes.len(), body), |(i, body)| {
            let (method, path) = routes[i];
            let (st, resp) = http_body(&d.sock, method, path, &body);
            prop_assert!((200..500).contains(&st), "{method} {path} {body:?} -> {st} {resp}");
            if st >= 400 {
                let v: Value = serde_json::from_str(&resp).map_err(|e| TestCaseError::fail(format!("{e}: {resp}")))?;
                prop_assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{resp}");
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(http(&d.sock, "GET", "/healthz").0, 200, "still serving");
    let s: Value = serde_json::from_str(&http(&d.sock, "GET", "/v1/agents/sleeper").1).unwrap();
    assert_eq!(s["state"], "running");
}

#[test]
fn tcp_only_with_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-for-the-test-0123456789";
    std::fs::write(dir.path().join("token"), token).unwrap();
    // The token must be private (the daemon refuses one readable by group or others).
    std::fs::set_permissions(dir.path().join("token"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let extra = vec!["--tcp".to_owned(), addr.clone(), "--token-file".to_owned(), dir.path().join("token").display().to_string()];
    let d = launch_with(dir, &extra);
    let tcp = |method: &str, path: &str, auth: Option<&str>| -> u16 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(s, "{method} {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "no TCP listener");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tcp("GET", "/v1/agents", None), 401);
    assert_eq!(tcp("GET", "/v1/agents", Some("wrong-token-wrong-token-wrong")), 401);
    assert_eq!(tcp("GET", "/healthz", None), 401, "everything on TCP needs the token");
    assert_eq!(tcp("GET", "/v1/agents", Some(token)), 200);
    assert_eq!(tcp("POST", "/v1/agents/sleeper/suspend", Some(token)), 200);
    assert_eq!(tcp("POST", "/v1/agents/sleeper/resume", Some(token)), 200);
    drop(d);
}

#[test]
fn compliance_analysis_recommendations_and_reports_through_the_daemon() {
    let d = start();
    let json = |path: &str| -> Value {
        let (st, body) = http(&d.sock, "GET", path);
        assert_eq!(st, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    };
    // A tokens hard violation with a suspension scheduled (5 min), and the operator's throttle.
    let (st, body) =
        http_body(&d.sock, "PATCH", "/v1/agents/sleeper/quota", r#"{"limits": {"tokens": {"soft": 5, "hard": 10, "action": "suspend"}}}"#);
    assert_eq!(st, 200, "{body}");
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(http_body(&d.sock, "POST", "/v1/agents/sleeper/usage", r#"{"resource": "tokens", "value": 50}"#).0, 200);
    assert_eq!(http(&d.sock, "POST", "/v1/agents/sleeper/throttle?cpu=150m").0, 200);
    let c = json("/v1/agents/sleeper/compliance");
    let res = |name: &str| c["resources"].as_array().unwrap().iter().find(|r| r["resource"] == name).unwrap().clone();
    let tokens = res("tokens");
    assert_eq!((tokens["usage"].as_u64(), tokens["soft"].as_u64(), tokens["hard"].as_u64()), (Some(50), Some(5), Some(10)), "{c}");
    assert_eq!(tokens["status"], "hard", "{c}");
    assert_eq!(tokens["pending"]["action"], "suspend", "{c}");
    let due = tokens["pending"]["due_ms"].as_u64().unwrap();
    assert!(due >= before + 300_000 && due <= before + 310_000, "due 5 min after the report: {due} vs {before}");
    assert!(tokens["pending"]["due"].as_str().unwrap().ends_with('Z'), "{c}");
    let memory = res("memory");
    assert_eq!(
        (memory["soft"].as_u64(), memory["hard"].as_u64(), memory["status"].as_str()),
        (Some(200_000_000), Some(500_000_000), Some("ok"))
    );
    assert!(memory["usage"].as_u64().is_some_and(|m| m > 0), "{c}");
    assert_eq!((c["compliant"].as_bool(), c["status"].as_str()), (Some(false), Some("hard")), "{c}");
    // Held by the operator and by the policy, whose throttle bridges the wait for the suspension.
    assert_eq!(
        (c["throttled"].as_bool(), c["throttled_by"].clone()),
        (Some(true), serde_json::json!(["policy:tokens", "operator"])),
        "{c}"
    );
    assert_eq!((c["suspended"].as_bool(), c["suspended_by"].clone()), (Some(false), serde_json::json!([])), "{c}");
    assert!(c["in_force"]["cpu_millicores"].as_u64().is_some_and(|m| m <= 150), "the tightest holder's limit: {c}");
    assert_eq!(http(&d.sock, "GET", "/v1/agents/ghost/compliance").0, 404);

    // On-demand analysis of recorded samples: at least 8 samples (every 250 ms) are needed.
    std::thread::sleep(Duration::from_millis(3000));
    let a = json("/v1/agents/sleeper/analysis?resource=memory&window=10m");
    assert_eq!((a["agent"].as_str(), a["resource"].as_str()), (Some("sleeper"), Some("memory")), "{a}");
    assert!(a["samples"].as_u64().unwrap() >= 8, "{a}");
    assert!(a["pattern"].is_string() && a["confidence"].is_number(), "{a}");
    assert_eq!(a["limits"]["hard"], 500_000_000, "{a}");
    let (st, body) = http(&d.sock, "GET", "/v1/agents/sleeper/analysis?resource=bogus%20name");
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["error"]["field"].as_str()), (422, Some("resource")), "{body}");
    let (st, body) = http(&d.sock, "GET", "/v1/agents/sleeper/analysis?window=forever");
    assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()["error"]["field"].as_str()), (422, Some("window")), "{body}");
    assert_eq!(http(&d.sock, "GET", "/v1/agents/sleeper/analysis?colour=red").0, 400);
    assert_eq!(http(&d.sock, "GET", "/v1/agents/ghost/analysis").0, 404);

    // Recommendations: none before the first analytics run, but answered.
    assert!(json("/v1/recommendations").is_array());
    assert!(json("/v1/agents/sleeper/recommendations").is_array());
    assert_eq!(http(&d.sock, "GET", "/v1/agents/ghost/recommendations").0, 404);

    // Reports over absolute ranges and durations, as json, text, svg and html.
    let at = |ms: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let r = json(&format!("/v1/agents/sleeper/report?since={}&until={}", at(before - 60_000), at(now + 60_000)));
    let mem = r[0]["resources"].as_array().unwrap().iter().find(|x| x["resource"] == "memory").unwrap().clone();
    assert!(mem["samples"].as_u64().unwrap() >= 8 && mem["hard"] == 500_000_000, "{mem}");
    // A range that ends before the agent started holds none of its samples.
    let empty = json(&format!("/v1/agents/sleeper/report?since={}&until={}", at(before - 7_200_000), at(before - 3_600_000)));
    assert!(empty[0]["resources"].as_array().unwrap().is_empty(), "{empty}");
    let fleet = json("/v1/report?since=10m");
    assert_eq!(fleet.as_array().unwrap().len(), 3, "every agent");
    for (format, starts) in [("svg", "<svg"), ("html", "<!doctype html>"), ("text", "20")] {
        let (st, body) = http(&d.sock, "GET", &format!("/v1/agents/sleeper/report?since=5m&format={format}"));
        assert_eq!(st, 200, "{format}: {body}");
        assert!(body.starts_with(starts), "{format}: {body}");
    }
    for (query, field) in [("since=yesterday", "since"), ("since=1h&until=2h", "until"), ("format=pdf", "format")] {
        let (st, body) = http(&d.sock, "GET", &format!("/v1/report?{query}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((st, v["error"]["field"].as_str()), (422, Some(field)), "{query}: {body}");
    }
    let far = at(before - 7_200_000);
    let (st, body) = http(&d.sock, "GET", &format!("/v1/agents/sleeper/report?since={far}&until={}&format=svg", at(before - 3_600_000)));
    assert_eq!(st, 404, "nothing to draw: {body}");

    // The CLI commands with --socket.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_allot")).args(args).arg("--socket").arg(&d.sock).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = cli(&["compliance", "sleeper"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("not compliant") && out.contains("throttled: yes, held by policy:tokens, operator") && out.contains("suspend at"),
        "{out}"
    );
    let (code, out, err) = cli(&["compliance", "sleeper", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "hard", "{out}");
    let (code, out, err) = cli(&["analyze", "--agent", "sleeper", "--resource", "memory", "--window", "10m"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("sleeper memory: ") && out.contains("confidence"), "{out}");
    let (code, out, err) = cli(&["analyze", "--agent", "sleeper", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap()["samples"].as_u64().unwrap() >= 8, "{out}");
    let (code, _, err) = cli(&["analyze", "--agent", "sleeper", "--window", "soon"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("window"), "{err}");
    let (code, out, err) = cli(&["recommend", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(serde_json::from_str::<Value>(&out).unwrap().is_array(), "{out}");
    let (code, out, err) = cli(&["report", "sleeper", "--since", &at(before - 60_000), "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["agent"], "sleeper", "{out}");
    let (code, out, err) = cli(&["report", "--since", "10m", "--until", "0s", "--format", "text"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sleeper (standard_agent)"), "{out}");
    let (code, _, err) = cli(&["report", "--since", "last tuesday"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("since"), "{err}");
    // The same range read from the state database directly.
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["report", "sleeper", "--format", "json", "--since", &at(before - 60_000), "--until", &at(now + 60_000), "--state"])
        .arg(d.dir.path().join("state.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local[0]["agent"], "sleeper");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["report", "--until", "yesterday", "--state"])
        .arg(d.dir.path().join("state.db"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--until"), "{out:?}");
}

#[test]
fn scripting_run_json_and_events_without_follow() {
    let d = start();
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_allot"));
        // --socket before any `--` of `allot run`.
        cmd.arg(args[0]).arg("--socket").arg(&d.sock).args(&args[1..]);
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "allot {args:?} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = cli(&["run", "--json", "--name", "scripted", "--group", "lightweight_agent", "--", "sleep", "300"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["id"], "scripted", "{v}");
    let pids: Vec<u64> = v["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(!pids.is_empty() && pids.contains(&v["pid"].as_u64().unwrap()), "{v}");
    let dirs: Vec<&str> = v["cgroup"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    if cgroups_in_use(&d.dir.path().join("state.db")) {
        assert!(!dirs.is_empty(), "{v}");
        for dir in &dirs {
            let procs = std::fs::read_to_string(Path::new(dir).join("cgroup.procs")).unwrap();
            assert!(procs.lines().any(|l| l.parse::<u64>().ok() == Some(pids[0])), "{dir} holds the agent: {procs}");
        }
    }
    // The events recorded so far, printed, and the command exits.
    let (code, out, err) = cli(&["events", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.first(), Some(&1), "{out}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "every event, in order: {seqs:?}");
    assert!(events.iter().any(|e| e["topic"] == "resource_management.agent.started" && e["agent"] == "scripted"), "{out}");
    let (code, out, err) = cli(&["events", "--json", "--since", "2", "--topic", "resource_management.agent.*"]);
    assert_eq!(code, Some(0), "{err}");
    let filtered: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!filtered.is_empty(), "{out}");
    assert!(
        filtered.iter().all(|e| e["seq"].as_u64().unwrap() > 2 && e["topic"].as_str().unwrap().starts_with("resource_management.agent."))
    );
    let (code, out, _) = cli(&["events"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("resource_management.agent.started"), "{out}");
    // The route: a JSON array; an agent gets its own (the access matrix covers who may call it).
    let (st, body) = http(&d.sock, "GET", "/v1/events?follow=false&since=0&topic=resource_management.agent.started");
    assert_eq!(st, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert!(page.as_array().unwrap().iter().all(|e| e["topic"] == "resource_management.agent.started" && e["at"].is_string()), "{page}");
    assert_eq!(http(&d.sock, "DELETE", "/v1/agents/scripted").0, 200);
}
