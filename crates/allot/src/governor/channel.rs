//! The file-based agent channel: each agent gets `ALLOT_AGENT_ID` and
//! `ALLOT_EVENTS_FILE`, a JSON-lines file where allot appends its quota,
//! throttle notices, scale-down requests, degradation plans, recovery
//! stages, suspension and termination notices. With `notify_signal` set in
//! the fleet file, allot also signals the agent after each message.

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One agent's channel.
#[derive(Debug)]
pub struct Channel {
    path: PathBuf,
    seq: u64,
    signal: Option<i32>,
}

impl Channel {
    /// Create (truncate) the channel file in `dir`.
    pub fn create(dir: &Path, agent: &str, signal: Option<i32>) -> Result<Channel, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{agent}.jsonl"));
        std::fs::write(&path, b"").map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Channel { path, seq: 0, signal })
    }

    /// Keep appending to an existing channel file (an adopted agent reads it still).
    pub fn reopen(dir: &Path, agent: &str, signal: Option<i32>) -> Result<Channel, String> {
        let path = dir.join(format!("{agent}.jsonl"));
        let seq = std::fs::read_to_string(&path).map(|t| t.lines().count() as u64).unwrap_or(0);
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            std::fs::write(&path, b"").map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        }
        Ok(Channel { path, seq, signal })
    }

    /// Make the file readable by the agent's user only (`0600`, owned by
    /// `owner` when that is another user than allot's): other agents may not
    /// read an agent's throttle and termination notices.
    pub fn give_to(&self, owner: Option<(u32, u32)>) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: std::io::Error| format!("cannot give {} to its agent: {e}", self.path.display());
        if let Some((uid, gid)) = owner.filter(|(uid, _)| *uid != rustix::process::geteuid().as_raw()) {
            std::os::unix::fs::chown(&self.path, Some(uid), Some(gid)).map_err(fail)?;
        }
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600)).map_err(fail)
    }

    /// The file's path (the agent's `ALLOT_EVENTS_FILE`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a message `{"seq", "type", ...fields}` and signal `pid` if configured.
    /// Returns what was delivered, for the enforcement record.
    pub fn send(&mut self, kind: &str, mut fields: Value, at_ms: u64, pid: Option<u32>) -> Result<String, String> {
        self.seq += 1;
        if let Value::Object(m) = &mut fields {
            m.insert("seq".into(), json!(self.seq));
            m.insert("type".into(), json!(kind));
            m.insert("at_ms".into(), json!(at_ms));
        } else {
            fields = json!({"seq": self.seq, "type": kind, "at_ms": at_ms, "data": fields});
        }
        let mut f =
            std::fs::OpenOptions::new().append(true).open(&self.path).map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        writeln!(f, "{fields}").map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        let mut detail = format!("{kind} #{} written to {}", self.seq, self.path.display());
        if let (Some(sig), Some(pid)) = (self.signal, pid) {
            match rustix::process::Signal::from_named_raw(sig).map(|s| allot_sys::signal::signal_all(&[pid], s)) {
                Some(Ok(1)) => detail.push_str(&format!("; signal {sig} sent to {pid}")),
                Some(Ok(_)) => detail.push_str(&format!("; signal {sig} to {pid} not sent: no such process")),
                Some(Err(e)) => detail.push_str(&format!("; signal {sig} to {pid} failed: {e}")),
                None => detail.push_str(&format!("; signal {sig} to {pid} not sent: invalid")),
            }
        }
        Ok(detail)
    }
}
