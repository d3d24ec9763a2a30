//! Budgets as the API, `allot budget` and `ps` show them.

/// The most open reservations an answer lists (`open_reservations` counts them all).
const LISTED: usize = 1000;

use super::super::control::ControlError;
use super::super::{Backend, Governor};
use allot_core::budget::{BudgetView, Level, OverLimit, Reservation, WindowSpec};
use allot_core::{AgentId, Time};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A reservation as answered.
pub(super) fn reservation_json(r: &Reservation) -> Value {
    let resources: BTreeMap<&str, u64> = r.holds.iter().map(|h| (h.resource.name(), h.amount)).collect();
    let levels: BTreeMap<&str, Vec<String>> =
        r.holds.iter().map(|h| (h.resource.name(), h.levels.iter().map(ToString::to_string).collect())).collect();
    json!({
        "id": r.id,
        "agent": r.agent.as_str(),
        "resources": resources,
        "levels": levels,
        "created_at": crate::governor::clock::rfc3339(r.created),
        "expires_at": crate::governor::clock::rfc3339(r.expires),
        "expires_ms": r.expires.as_millis(),
    })
}

/// One budget as the API and `allot budget` show it.
pub(in crate::governor) fn view_json(v: &BudgetView, now: Time) -> Value {
    json!({
        "level": v.level.to_string(),
        "resource": v.resource.name(),
        "window": window_json(&v.window),
        "hard": v.hard,
        "cap": v.cap,
        "soft": v.soft,
        "spent": v.spent,
        "reserved": v.reserved,
        "remaining": v.remaining,
        "over_soft": v.soft.is_some_and(|s| v.spent.saturating_add(v.reserved) > s),
        "resets_at": v.resets_at.map(crate::governor::clock::rfc3339),
        "resets_in_ms": v.resets_at.map(|t| t.as_millis().saturating_sub(now.as_millis())),
        "on_expiry": v.on_expiry.name(),
    })
}

fn window_json(w: &WindowSpec) -> Value {
    match w {
        WindowSpec::Rolling(r) => {
            json!({"kind": "rolling", "length_ms": allot_core::time::duration_millis(r.length()), "text": w.to_string()})
        }
        WindowSpec::Calendar(_) => json!({"kind": "calendar", "text": w.to_string()}),
    }
}

pub(super) fn over_json(o: &OverLimit) -> Value {
    json!({"level": o.level.to_string(), "resource": o.resource.name(), "used": o.used, "hard": o.hard})
}

impl<B: Backend> Governor<B> {
    /// The budgets that apply to an agent, or every budget (`None`), or a pool's.
    pub(in crate::governor) fn budget_views(&mut self, of: &BudgetQuery) -> Result<Value, ControlError> {
        let now = self.clock.now();
        let views = match of {
            BudgetQuery::All => self.budgets.ledger.snapshot(now),
            BudgetQuery::Agent(a) => {
                let id = self.known(a)?;
                self.budgets
                    .ledger
                    .snapshot_agent(&id, now)
                    .unwrap_or_else(|| self.budgets.ledger.snapshot_level(&Level::Agent(id.clone()), now))
            }
            BudgetQuery::Pool(p) => {
                let v = self.budgets.ledger.snapshot_level(&Level::Pool(p.clone()), now);
                if v.is_empty() {
                    return Err(ControlError::NoPool(p.clone()));
                }
                v
            }
        };
        let mut open = 0usize;
        let mut reservations: Vec<Value> = Vec::new();
        let matching = self.budgets.ledger.reservations().filter(|r| match of {
            BudgetQuery::All => true,
            BudgetQuery::Agent(a) => r.agent.as_str() == a,
            BudgetQuery::Pool(p) => r.holds.iter().any(|h| h.levels.contains(&Level::Pool(p.clone()))),
        });
        for r in matching {
            open += 1;
            if reservations.len() < LISTED {
                reservations.push(reservation_json(r));
            }
        }
        Ok(json!({
            "at": crate::governor::clock::rfc3339(now),
            "budgets": views.iter().map(|v| view_json(v, now)).collect::<Vec<_>>(),
            "reservations": reservations,
            "open_reservations": open,
            "reservations_truncated": open > LISTED,
        }))
    }

    /// Budget use of an agent for `ps`: per resource, the tightest level's `spent/hard`.
    pub(in crate::governor) fn budget_use(&self, id: &AgentId) -> Value {
        let now = self.clock.now();
        let Some(views) = self.budgets.ledger.snapshot_agent(id, now) else { return Value::Null };
        if views.is_empty() {
            return Value::Null;
        }
        let mut tightest: BTreeMap<&str, &BudgetView> = BTreeMap::new();
        for v in &views {
            let e = tightest.entry(v.resource.name()).or_insert(v);
            if v.remaining < e.remaining {
                *e = v;
            }
        }
        json!(tightest
            .into_iter()
            .map(|(r, v)| (r, json!({"level": v.level.to_string(), "spent": v.spent, "reserved": v.reserved, "hard": v.hard, "remaining": v.remaining})))
            .collect::<BTreeMap<_, _>>())
    }
}

/// What `GET` budgets asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetQuery {
    /// Every budget.
    All,
    /// Those applying to an agent.
    Agent(String),
    /// One pool's.
    Pool(String),
}
