//! The start-up checks of `allot daemon`, each made before the socket is
//! bound: the bearer token file (at least 32 bytes, not readable by group
//! or others) and the `--socket` path (only a stale socket is ever
//! removed). Each refusal exits nonzero, names the file, and leaves no
//! socket and nothing changed behind.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static RUN: AtomicUsize = AtomicUsize::new(0);

struct Setup {
    dir: tempfile::TempDir,
    sock: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("allot.sock");
        Setup { dir, sock }
    }

    /// A token file with `text` and `mode`.
    fn token(&self, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// `allot daemon` on this setup's state and socket with `extra` flags:
    /// it must refuse to start, exiting by itself (else it is stopped, and the test fails).
    fn daemon(&self, extra: &[&str]) -> Output {
        let name = format!("allot-test-{}-startup-{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
        let mut child = Command::new(env!("CARGO_BIN_EXE_allot"))
            .args(["daemon", "--cgroup-name", &name])
            .arg("--socket")
            .arg(&self.sock)
            .arg("--state")
            .arg(self.dir.path().join("state.db"))
            .args(extra)
            .env("ALLOT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                let out = child.wait_with_output().unwrap();
                panic!("the daemon started instead of refusing: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "the daemon must refuse to start: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tcp(token: &Path) -> Vec<String> {
    vec!["--tcp".into(), "127.0.0.1:0".into(), "--token-file".into(), token.display().to_string()]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// 32 bytes of token.
const TOKEN_32: &str = "0123456789abcdef0123456789ABCDEF";

#[test]
fn a_token_shorter_than_32_bytes_is_refused_before_the_socket_is_bound() {
    let s = Setup::new();
    // 31 bytes; the spaces and newline around it are trimmed, not counted.
    let token = s.token(&format!("  {}\n", &TOKEN_32[1..]), 0o600);
    let out = s.daemon(&args(&tcp(&token)));
    let err = stderr(&out);
    assert!(err.contains(&format!("--token-file {}: the token has 31 bytes; it must have at least 32", token.display())), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!s.sock.exists(), "no socket when a check failed");
    assert!(!s.dir.path().join("state.db").exists(), "the state is not touched when a check failed");
}

#[test]
fn a_token_readable_by_group_or_others_is_refused_with_the_chmod_to_run() {
    for (mode, who) in [(0o640, "its group"), (0o604, "others"), (0o644, "group and others"), (0o440, "its group")] {
        let s = Setup::new();
        let token = s.token(&format!("{TOKEN_32}{TOKEN_32}"), mode);
        let err = stderr(&s.daemon(&args(&tcp(&token))));
        let name = token.display();
        assert!(err.contains(&format!("--token-file {name} is readable by {who} (mode {mode:03o})")), "{mode:o}: {err}");
        assert!(err.contains(&format!("chmod 600 {name}")), "{err}");
        assert!(!s.sock.exists(), "{mode:o}: no socket when a check failed");
    }
}

#[test]
fn a_private_token_of_32_bytes_passes_its_check() {
    // The next check, of the socket path, fails: so the token's passed (it comes first).
    let s = Setup::new();
    std::fs::write(&s.sock, "x").unwrap();
    let token = s.token(&format!("{TOKEN_32}\n"), 0o600);
    let err = stderr(&s.daemon(&args(&tcp(&token))));
    assert!(!err.contains("token"), "{err}");
    assert!(err.contains(&format!("--socket {} exists", s.sock.display())), "{err}");
}

#[test]
fn a_missing_token_file_is_named() {
    let s = Setup::new();
    let missing = s.dir.path().join("no-such-token");
    let err = stderr(&s.daemon(&args(&tcp(&missing))));
    assert!(err.contains(&format!("--token-file {}: cannot open it", missing.display())), "{err}");
    assert!(!s.sock.exists());
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
    let s = Setup::new();
    std::fs::write(&s.sock, "precious data\n").unwrap();
    let err = stderr(&s.daemon(&[]));
    assert!(err.contains(&format!("--socket {} exists and is a regular file, not a socket", s.sock.display())), "{err}");
    assert_eq!(std::fs::read_to_string(&s.sock).unwrap(), "precious data\n", "the file is kept with its content");
}

#[test]
fn a_directory_at_the_socket_path_is_refused_and_kept() {
    let s = Setup::new();
    std::fs::create_dir(&s.sock).unwrap();
    std::fs::write(s.sock.join("inside"), "kept").unwrap();
    let err = stderr(&s.daemon(&[]));
    assert!(err.contains(&format!("--socket {} exists and is a directory, not a socket", s.sock.display())), "{err}");
    assert_eq!(std::fs::read_to_string(s.sock.join("inside")).unwrap(), "kept");
}

#[test]
fn a_symlink_at_the_socket_path_is_refused_and_neither_it_nor_its_target_is_touched() {
    let s = Setup::new();
    let target = s.dir.path().join("target");
    std::fs::write(&target, "target data").unwrap();
    std::os::unix::fs::symlink(&target, &s.sock).unwrap();
    let err = stderr(&s.daemon(&[]));
    assert!(err.contains(&format!("--socket {} exists and is a symbolic link, not a socket", s.sock.display())), "{err}");
    assert!(std::fs::symlink_metadata(&s.sock).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "target data");
    // A dangling link is no socket either.
    std::fs::remove_file(&target).unwrap();
    let err = stderr(&s.daemon(&[]));
    assert!(err.contains("is a symbolic link, not a socket"), "{err}");
    assert!(std::fs::symlink_metadata(&s.sock).is_ok(), "the dangling link is kept");
}

#[test]
fn a_live_socket_is_refused_and_kept() {
    let s = Setup::new();
    let _live = std::os::unix::net::UnixListener::bind(&s.sock).unwrap();
    let err = stderr(&s.daemon(&[]));
    assert!(err.contains(&format!("{} is in use", s.sock.display())), "{err}");
    assert!(std::os::unix::net::UnixStream::connect(&s.sock).is_ok(), "the live socket still answers");
}

#[test]
fn a_busy_tcp_address_is_refused_before_the_socket_is_bound() {
    let s = Setup::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let token = s.token(TOKEN_32, 0o600);
    let err = stderr(&s.daemon(&["--tcp", &addr, "--token-file", &token.display().to_string()]));
    assert!(err.contains(&format!("cannot listen on --tcp {addr}")), "{err}");
    assert!(!s.sock.exists(), "no socket when a check failed");
}
