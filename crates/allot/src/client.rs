//! A small blocking HTTP/1.1 client for the daemon's Unix socket, used by
//! the CLI commands that talk to a running `allot daemon`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

fn connect(sock: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(sock).map_err(|e| {
        format!(
            "no allot daemon answers at {} ({e}); start one with `allot daemon --socket {}` (or pass --socket)",
            sock.display(),
            sock.display()
        )
    })
}

/// Send one request; returns the status and the JSON (or text) body.
pub fn request(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut s = connect(sock)?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: allot\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}", payload.len())
        .map_err(|e| format!("cannot send to {}: {e}", sock.display()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("cannot read from {}: {e}", sock.display()))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed response from the daemon")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("malformed status line from the daemon")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, v))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The error message of a non-2xx answer.
pub fn failure(status: u16, v: &Value) -> String {
    match v["error"]["message"].as_str() {
        Some(m) => format!("the daemon answered {status}: {m}"),
        None => format!("the daemon answered {status}: {v}"),
    }
}

/// Follow server-sent events, calling `f` with each event's data (JSON) until it returns false.
pub fn follow(sock: &Path, path: &str, mut f: impl FnMut(Value) -> bool) -> Result<(), String> {
    let mut s = connect(sock)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: allot\r\nAccept: text/event-stream\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                if !f(v) {
                    return Ok(());
                }
            }
        }
    }
}
