//! The budgets part: the core [`Budgets`] ledger (agent limits, group
//! budgets, pools on custom resources) driven from the loop.
//!
//! - Configuration is reconciled from the quota ledger (`sync_budgets`):
//!   every registered agent's custom limits are its agent budgets, every
//!   group's `budgets` its group budgets, pools come from the fleet file and
//!   the API. A window change starts clean and is published
//!   (`budget.window_changed`).
//! - Reservations, settles, releases, expiries and usage reports change the
//!   core ledger at once and join a batch; the batch is recorded in one
//!   store transaction (`flush_budgets`, called by the loop when no command
//!   waits, or when the batch is full) and only then are the requests
//!   answered: group commit. When the store cannot record, every change of
//!   the batch is undone in the core, newest first, and every request is
//!   refused (fail closed).
//! - Each spend an agent makes is judged as its usage of the resource (its
//!   spend in the window of its own budget, else per minute): soft warns,
//!   hard acts, as for every resource; a policy throttle on a budget
//!   resource admits the agent's reservations at a rate (`Permits`).
//!
//! Here: the part, reserve/settle/release/expire/report, warnings and the
//! group commit; `config`: reconciling, pools through the API, loading;
//! `permits`: throttles; `views`: budgets as the API and the CLI show them.

mod config;
mod permits;
mod views;

use super::control::{ControlError, Reply};
use super::{Backend, Governor};
use allot_core::budget::{BudgetSpec, Budgets, Charge, Expired, Level, OverLimit, Refusal, Reservation, SettleError, Settled};
use allot_core::quantity::Window;
use allot_core::{AgentId, Resource, Time, events};
use allot_store::BudgetRecord;
use permits::Permits;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
pub use views::BudgetQuery;
use views::{over_json, reservation_json, view_json};

/// The most changes recorded in one transaction.
pub(super) const BATCH: usize = 512;

/// A change of the budget ledger waiting for its store transaction.
#[derive(Debug)]
enum Change {
    Reserved(Reservation),
    Settled(Settled),
    Released(Reservation),
    Expired(Vec<Expired>),
    Charged(Vec<Charge>),
}

#[derive(Debug)]
struct Pending {
    change: Change,
    /// The request to answer once recorded (none for an expiry).
    reply: Option<Reply<Value>>,
    answer: Value,
}

/// The budgets part of the governor.
#[derive(Debug, Default)]
pub(crate) struct BudgetPart {
    pub(super) ledger: Budgets,
    /// Changes made, not yet recorded.
    batch: Vec<Pending>,
    /// Pools in force: declared in the fleet file, replaced or added through the API.
    pub(super) pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>,
    /// The pools as the fleet file declares them.
    fleet_pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>,
    /// Pools declared or replaced through the API (stored).
    api_pools: BTreeSet<String>,
    /// Each agent's own spend of custom resources it has no budget on, per
    /// minute, for its usage reading (an unlimited meter per agent).
    meters: Budgets,
    /// Policy throttles on budget resources.
    permits: BTreeMap<(AgentId, Resource), Permits>,
    /// Over-limit or over-soft warnings published, per level and resource, and when (at most one a minute each).
    warned: BTreeMap<(&'static str, Level, Resource), Time>,
}

impl BudgetPart {
    pub(super) fn new(pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>) -> BudgetPart {
        BudgetPart { ledger: Budgets::new(), meters: Budgets::new(), fleet_pools: pools.clone(), pools, ..Default::default() }
    }

    /// Whether changes wait for their transaction.
    pub(super) fn pending(&self) -> usize {
        self.batch.len()
    }
}

/// The window of an agent's own spend of a resource: its limit's, else a minute.
fn own_window(limit: Option<&allot_core::Limit>) -> Window {
    limit.and_then(|l| l.window).unwrap_or(Window::Minute)
}

impl<B: Backend> Governor<B> {
    /// `POST /v1/agents/{id}/reservations`.
    pub(super) fn reserve(&mut self, agent: &str, amounts: BTreeMap<Resource, u64>, ttl: Duration, reply: Reply<Value>) {
        let now = self.clock.now();
        let id = match self.known(agent) {
            Ok(id) => id,
            Err(e) => return drop(reply.send(Err(e))),
        };
        if self.domain.ledger.quota(&id).is_none() {
            let state = self.agents.get(&id).map_or("unknown", |a| a.state_name()).to_owned();
            return drop(reply.send(Err(ControlError::NotRunning { agent: agent.to_owned(), state })));
        }
        for (r, amount) in &amounts {
            if let Some(p) = self.budgets.permits.get_mut(&(id.clone(), r.clone())) {
                if let Err(at) = p.admit(*amount, now) {
                    let message = format!(
                        "agent {agent} is throttled on {r}: reservations admitted at {:.0} {} a second",
                        p.per_second(),
                        r.unit().name()
                    );
                    let e = ControlError::Throttled {
                        resource: r.name().to_owned(),
                        message,
                        retry_after_ms: at.as_millis().saturating_sub(now.as_millis()),
                    };
                    return drop(reply.send(Err(e)));
                }
            }
        }
        match self.budgets.ledger.reserve(&id, &amounts, ttl, now) {
            Ok(r) => {
                let answer = reservation_json(&r);
                self.budgets.batch.push(Pending { change: Change::Reserved(r), reply: Some(reply), answer });
            }
            Err(refusal) => {
                self.exhausted_warning(&id, &refusal, now);
                drop(reply.send(Err(refusal_error(refusal, now))));
            }
        }
    }

    /// A refusal for an exhausted budget is published at most once a minute per level and resource.
    fn exhausted_warning(&mut self, id: &AgentId, refusal: &Refusal, now: Time) {
        let Refusal::Exhausted { level, resource, spent, reserved, hard, .. } = refusal else { return };
        if !self.once_a_minute("exhausted", level, resource, now) {
            return;
        }
        let detail = format!("{level} {resource}: reservation refused: spent {spent} + reserved {reserved} of {hard}");
        let data = json!({"level": level.to_string(), "resource": resource.name(), "spent": spent, "reserved": reserved, "hard": hard, "detail": detail});
        self.recorder.emit(now, events::BUDGET_EXHAUSTED, Some(id.as_str()), data);
    }

    fn once_a_minute(&mut self, kind: &'static str, level: &Level, resource: &Resource, now: Time) -> bool {
        let key = (kind, level.clone(), resource.clone());
        if self.budgets.warned.get(&key).is_some_and(|t| now.as_millis() < t.as_millis().saturating_add(60_000)) {
            return false;
        }
        self.budgets.warned.insert(key, now);
        true
    }

    /// The reservation `rid` if the caller may touch it (`caller` `None`: the operator).
    fn owned(&self, rid: u64, caller: Option<&str>) -> Result<&Reservation, ControlError> {
        match self.budgets.ledger.reservation(rid) {
            Some(r) if caller.is_none_or(|c| c == r.agent.as_str()) => Ok(r),
            // Another agent's reservation is not shown to exist.
            _ => Err(ControlError::NoReservation(rid)),
        }
    }

    /// `POST /v1/reservations/{rid}/settle`.
    pub(super) fn settle(&mut self, rid: u64, caller: Option<&str>, actual: &BTreeMap<Resource, u64>, reply: Reply<Value>) {
        if let Err(e) = self.owned(rid, caller) {
            return drop(reply.send(Err(e)));
        }
        let now = self.clock.now();
        match self.budgets.ledger.settle(rid, actual, now) {
            Ok(s) => {
                let lines: Vec<Value> = s
                    .lines
                    .iter()
                    .map(|l| json!({"resource": l.resource.name(), "reserved": l.reserved, "actual": l.actual, "returned": l.returned, "overrun": l.overrun}))
                    .collect();
                let over: Vec<Value> = s.over_limit.iter().map(over_json).collect();
                let answer = json!({"id": rid, "agent": s.reservation.agent.as_str(), "settled": lines, "over_limit": over});
                let agent = s.reservation.agent.clone();
                if s.overran() {
                    let data = json!({"reservation": rid, "lines": answer["settled"].clone(), "over_limit": over.clone(),
                        "detail": format!("reservation {rid} settled above what it reserved: the overrun is charged")});
                    self.recorder.emit(now, events::BUDGET_OVERRUN, Some(agent.as_str()), data);
                }
                self.over_limit(&s.over_limit, Some(&agent), now);
                self.soft_warnings(&s.charges, &agent, now);
                let spent: Vec<(Resource, u64)> = s.lines.iter().map(|l| (l.resource.clone(), l.actual)).collect();
                self.budgets.batch.push(Pending { change: Change::Settled(s), reply: Some(reply), answer });
                self.spent(&agent, &spent, now);
            }
            Err(e) => drop(reply.send(Err(settle_error(e)))),
        }
    }

    /// `DELETE /v1/reservations/{rid}`.
    pub(super) fn release(&mut self, rid: u64, caller: Option<&str>, reply: Reply<Value>) {
        if let Err(e) = self.owned(rid, caller) {
            return drop(reply.send(Err(e)));
        }
        match self.budgets.ledger.release(rid) {
            Ok(r) => {
                let answer = json!({"id": rid, "agent": r.agent.as_str(), "released": true});
                self.budgets.batch.push(Pending { change: Change::Released(r), reply: Some(reply), answer });
            }
            Err(e) => drop(reply.send(Err(settle_error(e)))),
        }
    }

    /// Reservations past their expiry, charged or released as their budgets say.
    pub(super) fn expire_budgets(&mut self, now: Time) {
        let expired = self.budgets.ledger.expire(now);
        if expired.is_empty() {
            return;
        }
        for e in &expired {
            let data = json!({
                "reservation": e.reservation.id,
                "resources": e.reservation.holds.iter().map(|h| (h.resource.name(), h.amount)).collect::<BTreeMap<_, _>>(),
                "charged": e.charges.iter().map(|c| json!({"level": c.level.to_string(), "resource": c.resource.name(), "amount": c.amount})).collect::<Vec<_>>(),
                "detail": format!("reservation {} expired unsettled: charged where its budget charges expiries", e.reservation.id),
            });
            self.recorder.emit(now, events::BUDGET_EXPIRED, Some(e.reservation.agent.as_str()), data);
            self.over_limit(&e.over_limit, Some(&e.reservation.agent), now);
            self.soft_warnings(&e.charges, &e.reservation.agent, now);
            // What the agent spent: the amounts charged anywhere for it.
            let mut spent: BTreeMap<Resource, u64> = BTreeMap::new();
            for h in &e.reservation.holds {
                if e.charges.iter().any(|c| c.resource == h.resource) {
                    spent.insert(h.resource.clone(), h.amount);
                }
            }
            let agent = e.reservation.agent.clone();
            self.spent(&agent, &spent.into_iter().collect::<Vec<_>>(), now);
        }
        self.budgets.batch.push(Pending { change: Change::Expired(expired), reply: None, answer: Value::Null });
    }

    /// A usage report on a custom resource: an increment within the window
    /// of every budget that applies (answered once recorded), else on the
    /// agent's meter; judged as its usage (its spend in the window).
    pub(super) fn report_spend(&mut self, id: &AgentId, resource: &Resource, amount: u64, per: Window, reply: Reply<Value>) {
        let now = self.clock.now();
        let change = match self.budgets.ledger.add(id, resource, amount, now) {
            Ok(added) => {
                self.over_limit(&added.over_limit, Some(id), now);
                self.soft_warnings(&added.charges, id, now);
                Some(Change::Charged(added.charges))
            }
            // No budget anywhere: the meter counts it, nothing to record.
            Err(Refusal::UnknownResource { .. } | Refusal::UnknownAgent(_)) => None,
            Err(refusal) => return drop(reply.send(Err(refusal_error(refusal, now)))),
        };
        let (violation, decisions) = self.spent(id, &[(resource.clone(), amount)], now);
        let usage = self.own_spend(id, resource, now);
        let answer = json!({"agent": id.as_str(), "resource": resource.name(), "value": amount, "per": per.suffix(), "usage": usage,
            "violation": violation, "decisions": decisions});
        match change {
            Some(change) => self.budgets.batch.push(Pending { change, reply: Some(reply), answer }),
            None => drop(reply.send(Ok(answer))),
        }
    }

    /// The agent's spend of a resource in its window: its own budget's, else its meter's.
    pub(super) fn own_spend(&self, id: &AgentId, resource: &Resource, now: Time) -> u64 {
        let own = Level::Agent(id.clone());
        let b = &self.budgets;
        b.ledger.view(&own, resource, now).or_else(|| b.meters.view(&own, resource, now)).map_or(0, |v| v.spent)
    }

    /// Spend by an agent: counted on its meter when it has no budget of its
    /// own there, then judged as its usage (ledger, alerts, policy) and kept
    /// as its sample of the tick.
    fn spent(&mut self, id: &AgentId, amounts: &[(Resource, u64)], now: Time) -> (Option<allot_core::Violation>, usize) {
        let mut last = (None, 0);
        if self.domain.ledger.quota(id).is_none() {
            return last;
        }
        for (resource, amount) in amounts {
            let own = Level::Agent(id.clone());
            if self.budgets.ledger.budget(&own, resource).is_none() {
                if self.budgets.meters.budget(&own, resource).is_none() {
                    let w = own_window(self.domain.ledger.quota(id).and_then(|q| q.limits.get(resource)));
                    let _ = self.budgets.meters.set_budget(own.clone(), resource.clone(), BudgetSpec::rolling(u64::MAX, w), now);
                }
                let _ = self.budgets.meters.add(id, resource, *amount, now);
            }
            let v = self.own_spend(id, resource, now);
            self.sampler.reported.insert((id.clone(), resource.clone()), (now, v));
            let (a, n) = self.judge(id, resource.clone(), v, now);
            last = (a.and_then(|a| a.violation), n);
        }
        last
    }

    /// Budgets above their hard limit after a spend that had to be counted,
    /// or above their soft limit: a warning, at most once a minute each.
    fn over_limit(&mut self, over: &[OverLimit], agent: Option<&AgentId>, now: Time) {
        for o in over {
            if !self.once_a_minute("over_limit", &o.level, &o.resource, now) {
                continue;
            }
            let detail = format!("{} {}: {} used of a hard limit of {}", o.level, o.resource, o.used, o.hard);
            let mut data = over_json(o);
            data["detail"] = json!(detail);
            self.recorder.emit(now, events::BUDGET_OVER_LIMIT, agent.map(AgentId::as_str), data);
        }
    }

    /// Group and pool budgets above their soft limit after these charges: a
    /// warning, at most once a minute each (an agent's own soft limit is the
    /// policy's, as for every resource).
    fn soft_warnings(&mut self, charges: &[Charge], agent: &AgentId, now: Time) {
        for c in charges {
            if matches!(c.level, Level::Agent(_)) || self.budgets.ledger.budget(&c.level, &c.resource).and_then(|b| b.soft).is_none() {
                continue;
            }
            let Some(v) = self.budgets.ledger.view(&c.level, &c.resource, now) else {
                continue;
            };
            let used = v.spent.saturating_add(v.reserved);
            let Some(soft) = v.soft.filter(|s| used > *s) else { continue };
            if !self.once_a_minute("soft", &c.level, &c.resource, now) {
                continue;
            }
            let detail = format!(
                "{} {}: {} used (spent {} + reserved {}) of a soft limit of {} (hard {})",
                v.level, v.resource, used, v.spent, v.reserved, soft, v.hard
            );
            let mut data = view_json(&v, now);
            data["detail"] = json!(detail);
            self.recorder.emit(now, events::BUDGET_SOFT, Some(agent.as_str()), data);
        }
    }

    /// Record the batch in one transaction, then answer its requests; when
    /// the store cannot, undo every change (newest first) and refuse them.
    pub(super) fn flush_budgets(&mut self) {
        if self.budgets.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.budgets.batch);
        let records: Vec<BudgetRecord<'_>> = batch
            .iter()
            .map(|p| match &p.change {
                Change::Reserved(r) => BudgetRecord::Reserved(r),
                Change::Settled(s) => BudgetRecord::Settled(s),
                Change::Released(r) => BudgetRecord::Released(r.id),
                Change::Expired(e) => BudgetRecord::Expired(e),
                Change::Charged(c) => BudgetRecord::Charged(c),
            })
            .collect();
        let result = self.recorder.store.record_budget_batch(&records);
        drop(records);
        match result {
            Ok(()) => {
                for p in batch {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Ok(p.answer));
                    }
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, changes = batch.len(), "budget changes not recorded: undone and refused");
                self.recorder.unrecorded(&why);
                for p in batch.into_iter().rev() {
                    match &p.change {
                        Change::Reserved(r) => self.budgets.ledger.unreserve(r),
                        Change::Settled(s) => self.budgets.ledger.unsettle(s),
                        Change::Released(r) => self.budgets.ledger.restore_reservation(r.clone()),
                        Change::Expired(es) => es.iter().rev().for_each(|e| self.budgets.ledger.unexpire(e)),
                        Change::Charged(c) => self.budgets.ledger.uncharge(c),
                    }
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(ControlError::Unrecorded(why.clone())));
                    }
                }
            }
        }
    }
}

fn refusal_error(r: Refusal, now: Time) -> ControlError {
    match r {
        Refusal::Exhausted { ref level, ref resource, retry_after, .. } => ControlError::Exhausted {
            level: level.to_string(),
            resource: resource.name().to_owned(),
            message: r.to_string(),
            retry_after_ms: retry_after.map(|t| t.as_millis().saturating_sub(now.as_millis())),
        },
        Refusal::UnknownAgent(_) | Refusal::UnknownResource { .. } | Refusal::UnknownLevel { .. } => {
            ControlError::InvalidAt { field: "resources".into(), message: r.to_string() }
        }
        Refusal::Invalid(m) => ControlError::InvalidAt { field: "resources".into(), message: m },
    }
}

fn settle_error(e: SettleError) -> ControlError {
    match e {
        SettleError::UnknownReservation(id) => ControlError::NoReservation(id),
        SettleError::UnknownResource { .. } => ControlError::InvalidAt { field: "resources".into(), message: e.to_string() },
    }
}
