//! Stopping every agent at shutdown (`allot up`'s end): notice, grace,
//! kill, serving the API through the grace, starting no agent any more.

use super::intent::{Applied, Intent, Op, Source};
use super::{Backend, Governor};
use allot_core::AgentId;
use std::time::Duration;

impl<B: Backend> Governor<B> {
    /// Stop every live agent: notice, grace, kill; waits for them (the loop has ended).
    ///
    /// The API is served through the grace period (an agent acknowledges
    /// its termination notice, a reader is answered), but no agent is
    /// started or adopted any more.
    pub(super) async fn stop_all(&mut self, why: &str, inbox: &mut super::event::Inbox) {
        self.stopping = Some(why.to_owned());
        let grace = self.settings.policy.terminate_grace;
        let live: Vec<AgentId> = self.agents.map.iter().filter(|(_, a)| a.proc.is_some()).map(|(id, _)| id.clone()).collect();
        // Each burst of records (the notices, the kills) is one commit.
        let batch = self.recorder.begin_batch();
        for id in &live {
            let reason = format!("stopped by allot ({why})");
            let _ = self.apply(Intent { agent: id.clone(), source: Source::Lifecycle, op: Op::Terminate { grace, reason } });
        }
        self.recorder.end_batch(batch);
        let until = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < until && self.agents.map.values().any(|a| a.proc.is_some()) {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                c = inbox.control() => {
                    self.handle_control(c);
                    self.flush_budgets();
                }
            }
            self.reap();
        }
        let mut waits = Vec::new();
        let batch = self.recorder.begin_batch();
        for id in &live {
            if self.agents.get(id).is_some_and(|a| a.proc.is_some()) {
                if let Applied::Settling { settle, .. } = self.apply(Intent { agent: id.clone(), source: Source::Lifecycle, op: Op::Kill })
                {
                    waits.push(tokio::task::spawn_blocking(move || settle.wait(allot_sys::actuate::SETTLE_TIMEOUT)));
                }
            }
        }
        self.recorder.end_batch(batch);
        for w in waits {
            if let Ok(Err(e)) = w.await {
                tracing::warn!(error = %e, "kill at stop");
            }
        }
        for _ in 0..50 {
            self.reap();
            if self.agents.map.values().all(|a| a.proc.is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
