//! The blocking client of the CLI commands that talk to a running
//! `allot daemon` over its Unix socket: a thin wrapper over [`crate::http`],
//! with one single-threaded tokio runtime per call. Not for use inside an
//! async runtime (the governor and the daemon use [`crate::http`] directly).

use crate::http::{self, HttpError, Target};
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a request to the daemon may take (the daemon answers within 10 s).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The default socket: `/run/allot/allot.sock` as root, else `$XDG_RUNTIME_DIR/allot.sock`.
pub fn default_socket() -> Result<PathBuf, String> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/run/allot/allot.sock"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => Ok(PathBuf::from(d).join("allot.sock")),
        None => Err("no --socket given and XDG_RUNTIME_DIR is not set".into()),
    }
}

fn block_on<T>(work: impl Future<Output = T>) -> Result<T, String> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(rt.block_on(work))
}

/// Send one request (within [`TIMEOUT`]); returns the status and the JSON (or text) body.
pub fn request(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let target = Target::Unix(sock.to_owned());
    let r = block_on(http::request(&target, method, path, body, TIMEOUT))?.map_err(|e| e.to_string())?;
    Ok((r.status, r.body))
}

/// The error message of a non-2xx answer.
pub fn failure(status: u16, v: &Value) -> String {
    match v["error"]["message"].as_str() {
        Some(m) => format!("the daemon answered {status}: {m}"),
        None => format!("the daemon answered {status}: {v}"),
    }
}

/// Follow server-sent events, calling `f` with each event's data (JSON) until it returns false.
pub fn follow(sock: &Path, path: &str, f: impl FnMut(Value) -> bool) -> Result<(), String> {
    let target = Target::Unix(sock.to_owned());
    match block_on(http::follow_sse(&target, path, f))? {
        Ok(()) => Ok(()),
        Err(HttpError::Status { status, body, .. }) => Err(failure(status, &body)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::{Json, Router, routing::get};
    use serde_json::json;

    #[test]
    fn blocking_calls_over_the_socket_and_the_no_daemon_message() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let p = sock.display();
        let e = request(&sock, "GET", "/v1/agents", None).unwrap_err();
        assert!(e.starts_with(&format!("no allot daemon answers at {p} (")), "{e}");
        assert!(e.ends_with(&format!("); start one with `allot daemon --socket {p}` (or pass --socket)")), "{e}");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let app = Router::new().route("/v1/agents", get(|| async { Json(json!([{ "id": "a" }])) }));
            rt.block_on(async { axum::serve(tokio::net::UnixListener::from_std(l).unwrap(), app).await })
        });
        assert_eq!(request(&sock, "GET", "/v1/agents", None).unwrap(), (200, json!([{ "id": "a" }])));
        let (status, v) = request(&sock, "GET", "/v1/nothing", None).unwrap();
        assert_eq!(failure(status, &v), "the daemon answered 404: \"\"");
        assert_eq!(follow(&sock, "/v1/nothing", |_| true).unwrap_err(), "the daemon answered 404: \"\"");
    }
}
