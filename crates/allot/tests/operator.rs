//! Operator changes through a real daemon (issue 11, items 7-10): groups
//! created or changed through the API survive a SIGKILL and restart (the
//! member keeps running with its quota); a group change is written to the
//! kernel (its totals on the group cgroup, its members' backstops) in an
//! order cgroup v1 accepts, and a member's cpu limit is never written above
//! its group's cpu total; quota changes merge field by field; reported usage
//! takes the path of a sample (alerts, stored samples, analysis) and its
//! rate is converted to the limit's window.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::{CgroupRootGuard, cgroup_roots, cgroups_here, http, start_daemon};
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const MI: u64 = 1 << 20;

/// A daemon on the state in `dir` once its socket answers; SIGKILLed on drop.
struct Daemon {
    child: Child,
    sock: PathBuf,
    state: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, fleet: &str, name: &str) -> Daemon {
        let (mut child, sock, state) = start_daemon(dir, fleet, name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not open its socket");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, sock, state }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (st, b) = http(&self.sock, method, path, body);
        (st, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// The agent once it runs with its pids known.
    fn running(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = self.call("GET", &format!("/v1/agents/{id}"), "");
            if v["state"] == "running" && v["pids"].as_array().is_some_and(|p| !p.is_empty()) {
                return v;
            }
            assert!(Instant::now() < deadline, "{id} does not run: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `allot COMMAND --socket SOCK ARGS...`.
    fn cli(&self, command: &[&str], args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_allot")).args(command).arg("--socket").arg(&self.sock).args(args).output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn pids(v: &Value) -> Vec<u64> {
    v["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect()
}

/// A test's cgroup root name and the guard that removes it (and kills what runs there) at the end.
fn root(tag: &str) -> (String, CgroupRootGuard) {
    let name = format!("allot-test-{}-{tag}", std::process::id());
    (name.clone(), CgroupRootGuard(name))
}

/// The directory of `rel` (`group` or `group/agent`) in the hierarchy holding `file`.
fn dir_with(name: &str, rel: &str, file: &str) -> Option<PathBuf> {
    cgroup_roots(name).into_iter().map(|r| r.join(rel)).find(|d| d.join(file).exists())
}

/// The cpu limit of a cgroup in millicores (`None`: unlimited), from v1 `cpu.cfs_quota_us` or v2 `cpu.max`.
fn cpu_limit(name: &str, rel: &str) -> Option<u64> {
    if let Some(d) = dir_with(name, rel, "cpu.cfs_quota_us") {
        let q: i64 = std::fs::read_to_string(d.join("cpu.cfs_quota_us")).unwrap().trim().parse().unwrap();
        let p: i64 = std::fs::read_to_string(d.join("cpu.cfs_period_us")).unwrap().trim().parse().unwrap();
        return (q > 0).then(|| (q * 1000 / p) as u64);
    }
    let d = dir_with(name, rel, "cpu.max").unwrap_or_else(|| panic!("no cpu controller for {rel}"));
    let text = std::fs::read_to_string(d.join("cpu.max")).unwrap();
    let mut f = text.split_whitespace();
    let (q, p) = (f.next().unwrap(), f.next().unwrap().parse::<u64>().unwrap());
    q.parse::<u64>().ok().map(|q| q * 1000 / p)
}

/// The memory ceiling of a cgroup in bytes, from v1 `memory.limit_in_bytes` or v2 `memory.max`.
fn memory_limit(name: &str, rel: &str) -> Option<u64> {
    let file = ["memory.limit_in_bytes", "memory.max"].into_iter().find(|f| dir_with(name, rel, f).is_some())?;
    std::fs::read_to_string(dir_with(name, rel, file)?.join(file)).unwrap().trim().parse().ok()
}

const TINY: &str = r#"{"extends": "lightweight_agent", "limits": {"memory": {"soft": "30Mi", "hard": "60Mi"}}, "totals": {"memory": "200Mi", "cpu": "500m"}}"#;

#[test]
fn a_group_created_through_the_api_survives_a_sigkill_and_its_member_keeps_running() {
    if !cgroups_here() {
        return;
    }
    let (name, _guard) = root("grp");
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), "", &name);
    let (st, v) = d.call("POST", "/v1/groups/tiny", TINY);
    assert_eq!(st, 201, "{v}");
    let (st, v) = d.call("POST", "/v1/agents", r#"{"name": "m1", "group": "tiny", "command": ["sleep", "600"]}"#);
    assert_eq!(st, 201, "{v}");
    let before = pids(&d.running("m1"));
    let (st, v) = d.call("PATCH", "/v1/agents/m1/quota", r#"{"limits": {"memory": {"soft": "20Mi"}}}"#);
    assert_eq!(st, 200, "{v}");
    d.sigkill();
    drop(d);
    let d = Daemon::start(dir.path(), "", &name);
    let after = d.running("m1");
    assert_eq!(pids(&after), before, "the same processes, taken over: {after}");
    let memory = &after["quota"]["limits"]["memory"];
    assert_eq!((memory["soft"].as_u64(), memory["hard"].as_u64()), (Some(20 * MI), Some(60 * MI)), "its quota: {after}");
    let (_, groups) = d.call("GET", "/v1/groups", "");
    let tiny = groups.as_array().unwrap().iter().find(|g| g["name"] == "tiny").unwrap_or_else(|| panic!("tiny is gone: {groups}"));
    assert_eq!(tiny["members"], serde_json::json!(["m1"]), "{tiny}");
    let store = allot_store::Store::open_read_only(&d.state).unwrap();
    let exited: Vec<_> = store.events_since(0, 10_000).unwrap().into_iter().filter(|e| e.topic.ends_with("agent.exited")).collect();
    assert!(exited.is_empty(), "nothing was stopped: {exited:?}");
    // Its own override (soft) came back as an override: a later group change of hard still reaches it.
    let (st, v) = d.call("PUT", "/v1/groups/tiny", &TINY.replace("60Mi", "80Mi"));
    assert_eq!(st, 200, "{v}");
    let memory = &d.running("m1")["quota"]["limits"]["memory"];
    assert_eq!((memory["soft"].as_u64(), memory["hard"].as_u64()), (Some(20 * MI), Some(80 * MI)), "{memory}");
    // A deleted group is deleted from the store too.
    assert_eq!(d.call("POST", "/v1/groups/spare", TINY).0, 201);
    assert_eq!(d.call("DELETE", "/v1/groups/spare", "").0, 204);
    let stored: Vec<String> = store.groups().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(stored, ["tiny"]);
}

#[test]
fn a_group_change_is_written_to_the_kernel_and_member_cpu_limits_stay_under_the_group_total() {
    if !cgroups_here() {
        return;
    }
    let (name, _guard) = root("put");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "", &name);
    let body = |cpu: &str, memory: &str, burst: &str| {
        format!(
            r#"{{"extends": "lightweight_agent", "limits": {{"memory": {{"soft": "50Mi", "hard": "100Mi", "burst": "{burst}"}}}}, "totals": {{"memory": "{memory}", "cpu": "{cpu}"}}}}"#
        )
    };
    assert_eq!(d.call("POST", "/v1/groups/capped", &body("200m", "300Mi", "120Mi")).0, 201);
    assert_eq!(d.call("POST", "/v1/agents", r#"{"name": "w", "group": "capped", "command": ["sleep", "600"]}"#).0, 201);
    d.running("w");
    assert_eq!(cpu_limit(&name, "capped"), Some(200));
    assert_eq!(memory_limit(&name, "capped"), Some(300 * MI));
    assert_eq!(memory_limit(&name, "capped/w"), Some(120 * MI), "the member's ceiling at burst");
    // Raised: the totals and the member's backstop are written again at once.
    let (st, v) = d.call("PUT", "/v1/groups/capped", &body("500m", "400Mi", "150Mi"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(cpu_limit(&name, "capped"), Some(500), "{v}");
    assert_eq!(memory_limit(&name, "capped"), Some(400 * MI), "{v}");
    assert_eq!(memory_limit(&name, "capped/w"), Some(150 * MI), "{v}");
    // A throttle above the old 200m cap works now.
    let (st, v) = d.call("POST", "/v1/agents/w/throttle?cpu=300m", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(cpu_limit(&name, "capped/w"), Some(300));
    // Lowered under the member's throttle: the member first, then the group (v1 refuses a parent below a child).
    let (st, v) = d.call("PUT", "/v1/groups/capped", &body("100m", "400Mi", "150Mi"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(cpu_limit(&name, "capped"), Some(100), "{v}");
    assert_eq!(cpu_limit(&name, "capped/w"), Some(100), "{v}");
    let written = v["kernel"].to_string();
    assert!(written.contains("written as 100m (the group's cpu total)") && !written.contains("failure"), "{v}");
    // A throttle above the group's total is written at the total, and says so.
    let (st, v) = d.call("POST", "/v1/agents/w/throttle?cpu=250m", "");
    assert_eq!(st, 200, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("cpu limited to 250m, written as 100m"), "{v}");
    assert_eq!(cpu_limit(&name, "capped/w"), Some(100));
    let h = allot_store::Store::open_read_only(&d.state).unwrap().history(Some("w")).unwrap();
    assert!(h.iter().any(|r| r.action == "throttle" && r.outcome == "success" && r.detail.contains("written as 100m")), "{h:?}");
    // Raised again: the member gets its own limit back.
    let (st, v) = d.call("PUT", "/v1/groups/capped", &body("1", "400Mi", "150Mi"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(cpu_limit(&name, "capped"), Some(1000));
    assert_eq!(cpu_limit(&name, "capped/w"), Some(250), "{v}");
}

#[test]
fn quota_changes_merge_field_by_field_over_the_run_limits_through_the_cli_and_the_api() {
    if !cgroups_here() {
        return;
    }
    let (name, _guard) = root("quota");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "", &name);
    let o = d.cli(&["run"], &["--name", "q", "--group", "lightweight_agent", "--limit", "memory.hard=120Mi", "--", "sleep", "600"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.running("q");
    let o = d.cli(&["quota", "set"], &["q", "memory.soft=60M"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    let memory = &answer["limits"]["memory"];
    assert_eq!((memory["soft"].as_u64(), memory["hard"].as_u64()), (Some(60_000_000), Some(120 * MI)), "the run's hard is kept: {answer}");
    let (st, v) = d.call("PATCH", "/v1/agents/q/quota", r#"{"limits": {"memory": {"burst": "150Mi"}}}"#);
    assert_eq!(st, 200, "{v}");
    let memory = &v["limits"]["memory"];
    assert_eq!(
        (memory["soft"].as_u64(), memory["hard"].as_u64(), memory["burst"].as_u64()),
        (Some(60_000_000), Some(120 * MI), Some(150 * MI))
    );
    assert_eq!(v["limits"]["cpu"]["hard"], 100, "other resources keep the group's: {v}");
    // Out of order after the merge: refused, naming the field the change gave; nothing changed.
    let (st, v) = d.call("PATCH", "/v1/agents/q/quota", r#"{"limits": {"memory": {"soft": "130Mi"}}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("limits.memory.soft")), "{v}");
    let (st, v) = d.call("PATCH", "/v1/agents/q/quota", r#"{"limits": {"memory": {"hard": "50M"}}}"#);
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("limits.memory.hard")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("soft (60M) must not exceed hard (50M)"), "{v}");
    let o = d.cli(&["quota", "set"], &["q", "memory.burst=100Mi"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("limits.memory.burst"), "{err}");
    let memory = &d.running("q")["quota"]["limits"]["memory"];
    assert_eq!(
        (memory["soft"].as_u64(), memory["hard"].as_u64(), memory["burst"].as_u64()),
        (Some(60_000_000), Some(120 * MI), Some(150 * MI))
    );
    assert_eq!(memory_limit(&name, "lightweight_agent/q"), Some(150 * MI), "in force in the kernel");
}

const TOKENS: &str = r#"
[policy]
analytics_interval = "1s"
sample_interval = "100ms"

[[agents]]
name = "tok"
group = "standard_agent"
command = ["sleep", "600"]
limits.tokens = { soft = "50/min", hard = "100/min", action = "warn" }
"#;

#[test]
fn reported_usage_takes_the_path_of_a_sample_and_rates_are_counted_in_the_limits_window() {
    let (name, _guard) = root("usage");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), TOKENS, &name);
    d.running("tok");
    let report = |value: &str| d.call("POST", "/v1/agents/tok/usage", &format!(r#"{{"resource": "tokens", "value": {value}}}"#));
    // Each report adds to the agent's spend in the window of its limit (a minute): the usage judged is the sum.
    let mut sum: u64 = 0;
    for v in [10u64, 20, 30, 60, 80, 120, 40, 30, 20, 10] {
        let (st, body) = report(&v.to_string());
        sum += v;
        assert_eq!((st, body["usage"].as_u64()), (200, Some(sum)), "{body}");
        // At most one report per tick is kept as a sample: these are a tick apart.
        std::thread::sleep(Duration::from_millis(250));
    }
    // Rates in another window are counted per minute, the limit's window, rounded up.
    for (text, counted) in
        [(r#""400/h""#, 7), (r#""360/h""#, 6), (r#""2/s""#, 120), (r#""1.5k/day""#, 2), (r#""30/min""#, 30), (r#""45""#, 45)]
    {
        let (st, body) = report(text);
        sum += counted;
        assert_eq!((st, body["value"].as_u64(), body["per"].as_str()), (200, Some(counted), Some("min")), "{text}: {body}");
        assert_eq!(body["usage"].as_u64(), Some(sum), "{text}: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (st, body) = report(r#""6k/h""#);
    assert_eq!((st, body["value"].as_u64(), body["usage"].as_u64()), (200, Some(100), Some(sum + 100)), "6000/h is 100/min: {body}");
    assert_eq!(body["violation"]["kind"].as_str(), Some("hard"), "{} a minute is over hard 100/min: {body}", sum + 100);
    // A unit that is not a count, or a window that is not one: 422 naming the field.
    for bad in [r#""5Mi""#, r#""5/week""#, r#""-3""#] {
        let (st, body) = report(bad);
        assert_eq!((st, body["error"]["field"].as_str()), (422, Some("value")), "{bad}: {body}");
    }
    // The same path as a sample: alerts (warning and critical), the stored samples, the analysis.
    let deadline = Instant::now() + Duration::from_secs(15);
    let store = loop {
        let store = allot_store::Store::open_read_only(&d.state).unwrap();
        let analysed = store.analyses(Some("tok")).unwrap().iter().any(|(_, r, ..)| r == "tokens");
        if analysed && store.samples("tok", "tokens", 0).unwrap().len() >= 17 {
            break store;
        }
        assert!(Instant::now() < deadline, "no stored samples and analysis of the reports");
        std::thread::sleep(Duration::from_millis(200));
    };
    let events = store.events_since(0, 10_000).unwrap();
    let alert = |topic: &str| events.iter().any(|e| e.topic == topic && e.data["resource"] == "tokens");
    assert!(alert("resource_management.alert.warning") && alert("resource_management.alert.critical"), "{events:#?}");
    let values: Vec<u64> = store.samples("tok", "tokens", 0).unwrap().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values[..10], [10, 30, 60, 120, 200, 320, 360, 390, 410, 420], "stored as the spend in the window");
    assert_eq!(values[10..], [427, 433, 553, 555, 585, 630, 730], "stored as the spend in the window");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["analyze", "--agent", "tok", "--resource", "tokens", "--json", "--state"])
        .arg(&d.state)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success() && v["pattern"].is_string() && v["characteristics"]["count"] == 17,
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
