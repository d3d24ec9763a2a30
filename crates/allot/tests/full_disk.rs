//! The state on a full disk (a small tmpfs this test mounts): a start the
//! store cannot record is refused with 503 and leaves no agent running,
//! `/readyz` says why it is not ready, `allot_unrecorded_total` counts what
//! was lost; once there is room again the daemon is ready and records again.
#![allow(clippy::unwrap_used)]

mod real_daemon;

use real_daemon::http;
use std::time::{Duration, Instant};

/// Unmounts the tmpfs when the test ends (after the daemon is gone).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const FLEET: &str =
    "[policy]\nsample_interval = \"250ms\"\n\n[[agents]]\nname = \"s\"\ngroup = \"standard_agent\"\ncommand = [\"sleep\", \"1000\"]\n";

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_refuses_changes_it_cannot_record_and_recovers() {
    if !real_daemon::cgroups_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=3M", "tmpfs"]).arg(dir.path()).status();
    if !mounted.is_ok_and(|s| s.success()) {
        assert!(std::env::var("ALLOT_REQUIRE_CGROUPS").as_deref() != Ok("1"), "cannot mount a tmpfs for the full-disk test");
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    }
    let _mount = Mount(dir.path().to_path_buf());
    let path = dir.path().to_path_buf();
    let d = real_daemon::launch_in(dir, FLEET, "fulldisk");
    wait_for("ready", || http(&d.sock, "GET", "/readyz", "").0 == 200);
    // Fill the disk.
    let fill = path.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let start = r#"{"name": "late", "group": "standard_agent", "command": ["sleep", "1000"]}"#;
    let (st, body) = http(&d.sock, "POST", "/v1/agents", start);
    assert_eq!(st, 503, "a start the store cannot record is refused: {body}");
    assert!(body.contains("unrecorded") && body.contains("full"), "{body}");
    let late = d.agent("late");
    assert!(late.is_null() || late["state"] == "exited" || late["error"].is_object(), "not left running: {late}");
    let (st, body) = http(&d.sock, "GET", "/readyz", "");
    assert_eq!(st, 503, "not ready while the store cannot record: {body}");
    assert!(body.contains("full"), "says why: {body}");
    let (_, m) = http(&d.sock, "GET", "/metrics", "");
    let lost: u64 = m.lines().find_map(|l| l.strip_prefix("allot_unrecorded_total ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    assert!(lost >= 1, "counted: {lost}");
    // The agent already running is still governed: an operator suspend works.
    assert_eq!(http(&d.sock, "POST", "/v1/agents/s/suspend", "").0, 200);
    // Room again: ready within a few ticks, and starts are accepted.
    std::fs::remove_file(&fill).unwrap();
    wait_for("ready again once there is room", || http(&d.sock, "GET", "/readyz", "").0 == 200);
    let (st, body) = http(&d.sock, "POST", "/v1/agents", start);
    assert_eq!(st, 201, "{body}");
    drop(d);
}
