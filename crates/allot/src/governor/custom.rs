//! Custom actions: the configured handler (a command with the violation as
//! JSON on stdin, or an HTTP POST) runs as a task, at most 10 s; its result
//! comes back to the loop as an event and is recorded.

use super::{Backend, Governor};
use allot_core::Decision;
use allot_core::group::CustomHandler;
use allot_store::{Outcome, Stage};
use serde_json::Value;
use std::time::Duration;

/// How long a handler may take.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a custom handler reported back.
#[derive(Debug)]
pub(super) struct CustomResult {
    decision: Decision,
    outcome: Outcome,
    detail: String,
}

impl<B: Backend> Governor<B> {
    /// Start the agent's custom handler for a decision.
    pub(super) fn custom(&mut self, d: &Decision) {
        let Some(h) = self.domain.ledger.quota(&d.agent).and_then(|q| q.custom_handler.clone()) else {
            self.record_decision(d, "custom", Stage::Done, Outcome::Failure, "no custom_handler configured");
            return;
        };
        let tx = self.custom_tx.clone();
        let payload = serde_json::to_value(d).unwrap_or(Value::Null);
        let decision = d.clone();
        tokio::spawn(async move {
            let (outcome, detail) = run_handler(&h, &payload).await;
            let _ = tx.send(CustomResult { decision, outcome, detail });
        });
        if let Some(a) = self.agents.get_mut(&d.agent) {
            a.last_action = "custom (running)".into();
        }
    }

    /// Record what a handler reported.
    pub(super) fn custom_done(&mut self, res: CustomResult) {
        let mut d = res.decision;
        d.at = self.clock.now();
        self.record_decision(&d, "custom", Stage::Done, res.outcome, &res.detail);
    }
}

/// Run a custom handler with the violation as JSON: a command (on stdin) or
/// a URL (HTTP POST), within [`HANDLER_TIMEOUT`].
async fn run_handler(h: &CustomHandler, payload: &Value) -> (Outcome, String) {
    let body = payload.to_string();
    let work = async {
        match h {
            CustomHandler::Command(cmd) => run_command(cmd, &body).await,
            CustomHandler::Url(url) => crate::http::run_post_handler(url, &body).await,
        }
    };
    match tokio::time::timeout(HANDLER_TIMEOUT, work).await {
        Ok(Ok(d)) => (Outcome::Success, d),
        Ok(Err(e)) => (Outcome::Failure, e),
        Err(_) => (Outcome::Failure, format!("handler did not finish within {HANDLER_TIMEOUT:?}")),
    }
}

async fn run_command(cmd: &[String], body: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let (prog, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().chars().take(200).collect::<String>();
    if out.status.success() {
        Ok(format!("{prog} ran: {} {text}", out.status))
    } else {
        Err(format!("{prog} failed: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}
