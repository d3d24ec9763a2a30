//! The recording part of the governor: every event goes to the store (its
//! sequence number), the optional JSON-lines file, the live view's recent
//! lines and the metrics; every enforcement attempt is a typed record.
//!
//! An event's `at` never decreases with its `seq`: an event whose moment lies
//! before the last one published (a kernel wait recorded when it settles,
//! with the time the attempt began; an agent's start published after the
//! backstops written before its command ran) is published at the last
//! event's time. An enforcement record keeps the attempt's own time (when
//! the action was taken: a kill is recorded at the time of the kill, not of
//! its end); the event is when it was published.

use super::ViewMode;
use super::clock;
use super::view;
use crate::metrics::Metrics;
use allot_core::Time;
use allot_store::{NewEnforcement, Outcome, Stage, Store};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

/// One enforcement attempt to record and publish.
#[derive(Debug)]
pub(super) struct Enforcement<'a> {
    pub(super) at: Time,
    pub(super) agent: &'a str,
    /// The resource whose limit caused it (`-` for operator and lifecycle actions).
    pub(super) resource: &'a str,
    /// The bare action name (`throttle`, `suspend`, ...).
    pub(super) action: &'a str,
    pub(super) stage: Stage,
    pub(super) outcome: Outcome,
    pub(super) detail: &'a str,
    /// The event's topic.
    pub(super) topic: &'a str,
    /// The event's payload (also stored as the record's data).
    pub(super) data: Value,
}

/// Where events and records go.
/// How often the store's log is checkpointed (on a thread of its own: a
/// checkpoint in the governor's commits held it for 5 to 25 ms).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Recorder {
    pub(super) store: Store,
    events_out: Option<std::io::BufWriter<std::fs::File>>,
    view: ViewMode,
    pub(super) recent: VecDeque<String>,
    pub(super) metrics: Arc<Metrics>,
    /// Events and records that could not be stored.
    pub(super) unrecorded: u64,
    /// Why the last write to the store failed, until one succeeds again: the
    /// daemon is not ready and refuses state changes meanwhile (a full disk, say).
    pub(super) failing: Option<String>,
    /// The time of the last event published (also by a previous governor on this store).
    last_at: Time,
    /// The store's log checkpoints, on a thread of their own (see `Store::checkpoint_in_background`).
    checkpoints: Option<allot_store::Checkpointer>,
}

impl Recorder {
    pub(super) fn new(store: Store, events_out: Option<std::io::BufWriter<std::fs::File>>, view: ViewMode) -> Self {
        let metrics = Arc::new(Metrics::new());
        metrics.seed(&store);
        let last_seq = store.last_seq().unwrap_or(0);
        let last_at = match last_seq {
            0 => Time::ZERO,
            s => store.events_since(s - 1, 1).ok().and_then(|e| e.first().map(|e| Time::from_millis(e.at_ms))).unwrap_or(Time::ZERO),
        };
        let checkpoints = match store.checkpoint_in_background(CHECKPOINT_EVERY) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "the state store's log is checkpointed in its commits (no thread of its own)");
                None
            }
        };
        Recorder { store, events_out, view, recent: VecDeque::new(), metrics, unrecorded: 0, failing: None, last_at, checkpoints }
    }

    /// Begin a batch of writes (one commit for a burst; see `Store::begin_batch`):
    /// whether one began (none inside another).
    pub(super) fn begin_batch(&mut self) -> bool {
        match self.store.begin_batch() {
            Ok(began) => began,
            Err(e) => {
                tracing::warn!(error = %e, "writes not batched");
                false
            }
        }
    }

    /// End the batch `begin_batch` began (`began`): commit it, and wake the
    /// event streams, which could not read its events before.
    pub(super) fn end_batch(&mut self, began: bool) {
        if !began {
            return;
        }
        match self.store.end_batch() {
            Ok(()) => {
                if let Ok(seq) = self.store.last_seq() {
                    self.metrics.event_stored(seq);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a batch of records not stored");
                self.unrecorded(&e.to_string());
            }
        }
    }

    /// Why the last background checkpoint failed, when one did since the last call.
    pub(super) fn checkpoint_error(&self) -> Option<String> {
        self.checkpoints.as_ref()?.take_error()
    }

    /// The time an event at `at` is published at: no earlier than the last one.
    fn publish_at(&mut self, at: Time) -> Time {
        self.last_at = self.last_at.max(at);
        self.last_at
    }

    /// A write to the store failed: count it and remember why.
    pub(super) fn unrecorded(&mut self, why: &str) {
        self.unrecorded += 1;
        self.metrics.unrecorded();
        if self.failing.is_none() {
            tracing::error!(error = why, "the state store cannot record: not ready, state changes refused until it can");
        }
        self.failing = Some(why.to_owned());
    }

    /// A write to the store succeeded: when it had failed, say so with an
    /// event counting what was lost meanwhile.
    pub(super) fn recorded(&mut self) {
        if let Some(why) = self.failing.take() {
            tracing::info!(unrecorded = self.unrecorded, "the state store records again");
            let data = json!({"unrecorded": self.unrecorded, "last_error": why});
            let now = Time::from_millis(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis),
            );
            let _ = self.emit(now, allot_core::events::STORE_RECOVERED, None, data);
        }
    }

    /// While the store fails, try it once (a tick): an event that is stored
    /// ends the failure; a refused try is not counted as lost.
    pub(super) fn retry(&mut self, now: Time) {
        let Some(why) = self.failing.clone() else { return };
        let data = json!({"unrecorded": self.unrecorded, "last_error": why});
        let now = self.publish_at(now);
        if let Ok(seq) = self.store.append_event(now.as_millis(), allot_core::events::STORE_RECOVERED, None, &data) {
            self.failing = None;
            self.metrics.event();
            self.metrics.event_stored(seq);
            tracing::info!(unrecorded = self.unrecorded, "the state store records again");
        }
    }

    /// Publish an event; returns its sequence number when it was stored.
    pub(super) fn emit(&mut self, at: Time, topic: &str, agent: Option<&str>, data: Value) -> Option<u64> {
        let at = self.publish_at(at);
        let seq = match self.store.append_event(at.as_millis(), topic, agent, &data) {
            Ok(s) => {
                self.recorded();
                self.metrics.event_stored(s);
                Some(s)
            }
            Err(e) => {
                tracing::error!(topic, agent, error = %e, "event not stored");
                self.unrecorded(&e.to_string());
                None
            }
        };
        self.metrics.event();
        if let Some(out) = &mut self.events_out {
            let line = json!({"seq": seq, "at": clock::rfc3339(at), "topic": topic, "agent": agent, "data": data});
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        let short = topic.strip_prefix("resource_management.").unwrap_or(topic);
        let text = format!("{} {:<22} {} {}", &clock::rfc3339(at)[11..19], short, agent.unwrap_or("-"), view::brief(&data));
        if self.view == ViewMode::Plain {
            println!("{text}");
        }
        self.recent.push_back(text);
        while self.recent.len() > 8 {
            self.recent.pop_front();
        }
        seq
    }

    /// Publish an enforcement attempt and record it with its real outcome.
    pub(super) fn enforcement(&mut self, e: Enforcement<'_>) -> Option<u64> {
        let seq = self.emit(e.at, e.topic, Some(e.agent), e.data.clone());
        let record = NewEnforcement {
            seq,
            at_ms: e.at.as_millis(),
            agent: e.agent,
            resource: e.resource,
            action: e.action,
            stage: e.stage,
            outcome: e.outcome,
            detail: e.detail,
            data: &e.data,
        };
        match self.store.record_enforcement(&record) {
            Ok(_) => self.recorded(),
            Err(err) => {
                tracing::error!(agent = e.agent, action = e.action, error = %err, "enforcement record not stored");
                self.unrecorded(&err.to_string());
            }
        }
        if e.stage == Stage::Done {
            self.metrics.enforcement(e.agent, e.action, e.outcome);
        }
        tracing::info!(agent = e.agent, resource = e.resource, action = e.action, outcome = %e.outcome, detail = e.detail, "enforcement");
        seq
    }
}
