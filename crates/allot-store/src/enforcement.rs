//! The enforcement history: typed records in ([`NewEnforcement`] with its
//! [`Stage`] and [`Outcome`]), display records out ([`EnforcementRecord`]),
//! and the queries the governor needs (escalations still open, counts for
//! the metrics), so that no caller parses the display text.

use crate::names::text_enum;
use crate::{Store, StoreError, ms, sql_i};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The real outcome of an enforcement attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was carried out (or, for a scheduled escalation, announced).
    Success,
    /// It was attempted and failed.
    Failure,
    /// It was called off before it was carried out.
    Cancelled,
    /// Something weaker or different was done instead.
    Fallback,
}

text_enum!(Outcome, "outcome", { Success => "success", Failure => "failure", Cancelled => "cancelled", Fallback => "fallback" });

/// Where in its life an enforcement record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// An escalation announced for later (after its delay).
    Scheduled,
    /// An attempt carried out, or cancelled.
    Done,
}

text_enum!(Stage, "stage", { Scheduled => "scheduled", Done => "done" });

/// An enforcement attempt to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEnforcement<'a> {
    /// The event that announced it, if one was stored.
    pub seq: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The agent.
    pub agent: &'a str,
    /// The resource whose limit caused it.
    pub resource: &'a str,
    /// The bare action name (`throttle`, `suspend`, ...), without any stage.
    pub action: &'a str,
    /// Scheduled for later, or done.
    pub stage: Stage,
    /// The real outcome.
    pub outcome: Outcome,
    /// What was done or why it failed (paths, values, signals).
    pub detail: &'a str,
    /// The decision as the policy made it, or the event's payload.
    pub data: &'a Value,
}

/// One enforcement attempt and its real outcome, as shown to people and
/// served by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnforcementRecord {
    /// Row id.
    pub id: u64,
    /// The event that announced it.
    pub seq: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Agent.
    pub agent: String,
    /// Resource whose limit caused it.
    pub resource: String,
    /// The action's display name: the action (warn, throttle, suspend, ...),
    /// followed by ` (scheduled)` when `stage` is [`Stage::Scheduled`].
    pub action: String,
    /// `success`, `failure`, `cancelled` or `fallback`.
    pub outcome: String,
    /// What was done or why it failed (paths, values, signals).
    pub detail: String,
    /// The decision as the policy made it.
    pub decision: Value,
    /// Scheduled for later, or done.
    #[serde(default = "stage_done")]
    pub stage: Stage,
}

fn stage_done() -> Stage {
    Stage::Done
}

/// The display name of an action at a stage: the one place it is built.
fn display_action(action: &str, stage: Stage) -> String {
    match stage {
        Stage::Scheduled => format!("{action} (scheduled)"),
        Stage::Done => action.to_owned(),
    }
}

impl Store {
    /// Record an enforcement attempt with its stage and outcome; returns its row id.
    pub fn record_enforcement(&self, e: &NewEnforcement<'_>) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO enforcement (seq, at_ms, agent, resource, action, stage, outcome, detail, decision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![e.seq.map(sql_i), sql_i(e.at_ms), e.agent, e.resource, e.action, e.stage, e.outcome, e.detail, e.data.to_string()],
            )
            .map_err(self.sql())?;
        Ok(ms(self.conn.last_insert_rowid()))
    }

    /// The enforcement history, oldest first, for one agent or all.
    pub fn history(&self, agent: Option<&str>) -> Result<Vec<EnforcementRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, seq, at_ms, agent, resource, action, stage, outcome, detail, decision FROM enforcement \
                 WHERE (?1 IS NULL OR agent = ?1) ORDER BY id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![agent], |r| {
                let stage: Stage = r.get(6)?;
                let record = EnforcementRecord {
                    id: ms(r.get(0)?),
                    seq: r.get::<_, Option<i64>>(1)?.map(ms),
                    at_ms: ms(r.get(2)?),
                    agent: r.get(3)?,
                    resource: r.get(4)?,
                    action: display_action(&r.get::<_, String>(5)?, stage),
                    outcome: r.get(7)?,
                    detail: r.get(8)?,
                    decision: Value::Null,
                    stage,
                };
                Ok((record, r.get::<_, String>(9)?))
            })
            .map_err(self.sql())?;
        rows.map(|row| {
            let (mut record, decision) = row.map_err(self.sql())?;
            record.decision = self.json(&decision, || format!("enforcement {}", record.id))?;
            Ok(record)
        })
        .collect()
    }

    /// Escalations of `agent` announced ([`Stage::Scheduled`]) and neither
    /// carried out nor cancelled since: no later done row of the same agent,
    /// resource and action. Each `(resource, bare action)` once, in the order
    /// they were first left open.
    pub fn open_escalations(&self, agent: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.resource, s.action FROM enforcement s \
                 WHERE s.agent = ?1 AND s.stage = 'scheduled' AND NOT EXISTS ( \
                     SELECT 1 FROM enforcement d \
                     WHERE d.agent = s.agent AND d.resource = s.resource AND d.action = s.action AND d.stage = 'done' AND d.id > s.id) \
                 GROUP BY s.resource, s.action ORDER BY MIN(s.id)",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![agent], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The open escalations of an agent (as [`Store::open_escalations`]) with
    /// the time each is due, in ms since the epoch, when the record says it:
    /// (resource, action, due).
    pub fn open_escalations_due(&self, agent: &str) -> Result<Vec<(String, String, Option<u64>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.resource, s.action, json_extract(s.decision, '$.decision.due') FROM enforcement s \
                 WHERE s.agent = ?1 AND s.stage = 'scheduled' AND NOT EXISTS ( \
                     SELECT 1 FROM enforcement d \
                     WHERE d.agent = s.agent AND d.resource = s.resource AND d.action = s.action AND d.stage = 'done' AND d.id > s.id) \
                 ORDER BY s.id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![agent], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))
            .map_err(self.sql())?;
        let mut out: Vec<(String, String, Option<u64>)> = Vec::new();
        for row in rows {
            let (resource, action, due) = row.map_err(self.sql())?;
            // The first announcement of an open escalation holds its deadline.
            if !out.iter().any(|(r, a, _)| *r == resource && *a == action) {
                out.push((resource, action, due.and_then(|d| u64::try_from(d).ok())));
            }
        }
        Ok(out)
    }

    /// How many attempts were done ([`Stage::Done`]), by agent, bare action
    /// and outcome, ordered by agent, action and outcome name (for seeding
    /// counters at start).
    pub fn enforcement_counts(&self) -> Result<Vec<(String, String, Outcome, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT agent, action, outcome, COUNT(*) FROM enforcement WHERE stage = 'done' \
                 GROUP BY agent, action, outcome ORDER BY agent, action, outcome",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, ms(r.get(3)?)))).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }
}
