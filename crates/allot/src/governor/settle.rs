//! Concluding an applied intent: recorded at once when it is done, or,
//! when the kernel must still finish it (a freeze taking hold, a killed
//! tree emptying), waited for on a blocking thread (`spawn_blocking`); the
//! result comes back to the loop as an event, and only then is the attempt
//! recorded with its real outcome (and the operator who asked answered).

use super::control::{ControlError, Reply};
use super::intent::Applied;
use super::record::Enforcement;
use super::{Backend, Governor};
use allot_core::{AgentId, Time};
use allot_store::{Outcome, Stage};
use allot_sys::SysError;
use allot_sys::actuate::{Outcome as Written, SETTLE_TIMEOUT, Settle};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// How to record an attempt: now, or once its wait is over.
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) agent: AgentId,
    pub(super) at: Time,
    pub(super) resource: String,
    pub(super) action: String,
    pub(super) topic: String,
    /// The event payload; `outcome` and `detail` are filled in when settled.
    pub(super) data: Value,
    /// Put before the detail of what was done (`by the operator: `).
    pub(super) prefix: String,
    /// The live view's last action when done (by default `ACTION RESOURCE`).
    pub(super) last_action: Option<String>,
    /// The outcome when the wait succeeds (a migrate that suspends is a fallback).
    pub(super) success: Outcome,
    /// The operator waiting for the answer, if any.
    pub(super) reply: Option<Reply<String>>,
}

/// A finished wait.
#[derive(Debug)]
pub(super) struct Done {
    token: u64,
    result: Result<Written, SysError>,
}

/// Waits in flight.
#[derive(Debug)]
pub(super) struct Settles {
    tx: mpsc::UnboundedSender<Done>,
    pending: BTreeMap<u64, (Attempt, String)>,
    next: u64,
}

impl Settles {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Done>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Settles { tx, pending: BTreeMap::new(), next: 1 }, rx)
    }

    /// Wait for `settle` on a blocking thread; `attempt` says how to record it, `detail` what was written.
    fn start(&mut self, settle: Settle, attempt: Attempt, detail: String) {
        let token = self.next;
        self.next += 1;
        self.pending.insert(token, (attempt, detail));
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = settle.wait(SETTLE_TIMEOUT);
            let _ = tx.send(Done { token, result });
        });
    }

    /// The attempt a finished wait belongs to, with its outcome and detail.
    fn finish(&mut self, done: Done) -> Option<(Attempt, Outcome, String)> {
        let (attempt, written) = self.pending.remove(&done.token)?;
        Some(match done.result {
            // The final outcome holds every write, those made before the wait too.
            Ok(o) => (attempt, Outcome::Success, super::intent::describe(&o)),
            Err(e) => (attempt, Outcome::Failure, format!("{written}; {e}")),
        })
    }

    /// Waits still in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl<B: Backend> Governor<B> {
    /// Record an applied intent now, or when its kernel wait settles.
    /// The values written go into the record's data as `written`.
    pub(super) fn conclude(&mut self, mut attempt: Attempt, applied: Applied) {
        let written = |a: &mut Attempt, w: super::intent::Values| {
            if !w.is_empty() {
                a.data["written"] = Value::Object(w);
            }
        };
        match applied {
            Applied::Now { outcome, detail, written: w } => {
                written(&mut attempt, w);
                self.record_attempt(attempt, outcome, &detail);
            }
            Applied::Settling { detail, settle, written: w } => {
                written(&mut attempt, w);
                self.settles.start(settle, attempt, detail);
            }
        }
    }

    /// A kernel wait finished: record its attempt.
    pub(super) fn settled(&mut self, done: Done) {
        if let Some((attempt, outcome, detail)) = self.settles.finish(done) {
            self.record_attempt(attempt, outcome, &detail);
        }
    }

    fn record_attempt(&mut self, mut attempt: Attempt, outcome: Outcome, detail: &str) {
        // A success of an action that only stands in for another (migrate suspends) is what the attempt says.
        let outcome = if outcome == Outcome::Success { attempt.success } else { outcome };
        let detail = format!("{}{detail}", attempt.prefix);
        if let Some(a) = self.agents.get_mut(&attempt.agent) {
            a.last_action = attempt
                .last_action
                .take()
                .unwrap_or_else(|| super::enforce::last_action(&attempt.action, &attempt.resource, Stage::Done, outcome));
        }
        attempt.data["outcome"] = serde_json::json!(outcome);
        attempt.data["detail"] = serde_json::json!(detail);
        if let Some(reply) = attempt.reply.take() {
            let _ = reply.send(if outcome == Outcome::Failure { Err(ControlError::Kernel(detail.clone())) } else { Ok(detail.clone()) });
        }
        self.recorder.enforcement(Enforcement {
            at: attempt.at,
            agent: attempt.agent.as_str(),
            resource: &attempt.resource,
            action: &attempt.action,
            stage: Stage::Done,
            outcome,
            detail: &detail,
            topic: &attempt.topic,
            data: attempt.data,
        });
    }
}
