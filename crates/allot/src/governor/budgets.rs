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

use super::control::{ControlError, Reply};
use super::{Backend, Governor};
use allot_core::budget::{
    BudgetSpec, BudgetView, Budgets, Charge, Expired, Level, OverLimit, Refusal, Reservation, SettleError, Settled, WindowChange,
    WindowSpec,
};
use allot_core::quantity::Window;
use allot_core::{AgentId, Resource, Time, events};
use allot_store::BudgetRecord;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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

/// Reservations of one agent on one resource admitted at a rate while the
/// policy throttles it: a reservation takes its amount from a balance that
/// refills at `per_ms`; one is admitted while the balance is not negative
/// (it may go below 0 by the amount), else refused until it is again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Permits {
    /// Units a millisecond.
    per_ms: f64,
    balance: f64,
    /// The most the balance holds: one second's worth.
    cap: f64,
    at: Time,
}

impl Permits {
    fn new(per_window: u64, window: Duration, now: Time) -> Permits {
        let ms = allot_core::time::duration_millis(window).max(1) as f64;
        let per_ms = (per_window.max(1) as f64) / ms;
        let cap = (per_ms * 1000.0).max(1.0);
        Permits { per_ms, balance: cap, cap, at: now }
    }

    fn refill(&mut self, now: Time) {
        let dt = now.as_millis().saturating_sub(self.at.as_millis()) as f64;
        self.balance = (self.balance + dt * self.per_ms).min(self.cap);
        self.at = now;
    }

    /// Admit `amount` now, or say when the balance is back at 0.
    fn admit(&mut self, amount: u64, now: Time) -> Result<(), Time> {
        self.refill(now);
        if self.balance < 0.0 {
            let wait = (-self.balance / self.per_ms).ceil() as u64;
            return Err(now.plus(Duration::from_millis(wait.max(1))));
        }
        self.balance -= amount as f64;
        Ok(())
    }

    /// The rate, per second.
    fn per_second(&self) -> f64 {
        self.per_ms * 1000.0
    }
}

/// The budgets part of the governor.
#[derive(Debug, Default)]
pub(crate) struct BudgetPart {
    pub(super) ledger: Budgets,
    /// Changes made, not yet recorded.
    batch: Vec<Pending>,
    /// Pools: declared in the fleet file, replaced or added through the API.
    pub(super) pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>,
    /// Each agent's own spend of custom resources it has no budget on, per
    /// minute, for its usage reading (an unlimited meter per agent).
    meters: Budgets,
    /// Policy throttles on budget resources.
    permits: BTreeMap<(AgentId, Resource), Permits>,
    /// Over-limit or over-soft warnings published, per level and resource, and when (at most one a minute each).
    warned: BTreeMap<(Level, Resource), Time>,
}

impl BudgetPart {
    pub(super) fn new(pools: BTreeMap<String, BTreeMap<Resource, BudgetSpec>>) -> BudgetPart {
        BudgetPart { ledger: Budgets::new(), meters: Budgets::new(), pools, ..Default::default() }
    }

    /// Whether changes wait for their transaction.
    pub(super) fn pending(&self) -> usize {
        self.batch.len()
    }
}

/// A reservation as answered.
fn reservation_json(r: &Reservation) -> Value {
    let resources: BTreeMap<&str, u64> = r.holds.iter().map(|h| (h.resource.name(), h.amount)).collect();
    let levels: BTreeMap<&str, Vec<String>> =
        r.holds.iter().map(|h| (h.resource.name(), h.levels.iter().map(ToString::to_string).collect())).collect();
    json!({
        "id": r.id,
        "agent": r.agent.as_str(),
        "resources": resources,
        "levels": levels,
        "created_at": super::clock::rfc3339(r.created),
        "expires_at": super::clock::rfc3339(r.expires),
        "expires_ms": r.expires.as_millis(),
    })
}

/// One budget as the API and `allot budget` show it.
pub(super) fn view_json(v: &BudgetView, now: Time) -> Value {
    json!({
        "level": v.level.to_string(),
        "resource": v.resource.name(),
        "window": window_json(&v.window),
        "hard": v.hard,
        "soft": v.soft,
        "spent": v.spent,
        "reserved": v.reserved,
        "remaining": v.remaining,
        "over_soft": v.soft.is_some_and(|s| v.spent.saturating_add(v.reserved) > s),
        "resets_at": v.resets_at.map(super::clock::rfc3339),
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

fn over_json(o: &OverLimit) -> Value {
    json!({"level": o.level.to_string(), "resource": o.resource.name(), "used": o.used, "hard": o.hard})
}

/// The window of an agent's own spend of a resource: its limit's, else a minute.
fn own_window(limit: Option<&allot_core::Limit>) -> Window {
    limit.and_then(|l| l.window).unwrap_or(Window::Minute)
}

impl<B: Backend> Governor<B> {
    /// Reconcile the budget ledger with the quota ledger and the pools:
    /// every registered agent's memberships and custom limits, every group's
    /// budgets, every pool. Window changes are published; budgets no longer
    /// configured are removed (their spend with them).
    pub(super) fn sync_budgets(&mut self) {
        let now = self.clock.now();
        let mut want: BTreeMap<Level, BTreeMap<Resource, BudgetSpec>> = BTreeMap::new();
        let registered: Vec<AgentId> = self.domain.ledger.agents().cloned().collect();
        for id in &registered {
            let Some(q) = self.domain.ledger.quota(id) else { continue };
            let pools = self.agents.get(id).map(|a| agent_pools(&a.def.spec)).unwrap_or_default();
            self.budgets.ledger.set_agent(id.clone(), Some(q.group.clone()), pools.clone());
            self.budgets.meters.set_agent(id.clone(), None, Vec::new());
            let own = want.entry(Level::Agent(id.clone())).or_default();
            for (r, l) in q.limits.iter().filter(|(r, _)| r.is_custom()) {
                own.insert(r.clone(), BudgetSpec::from_limit(l));
            }
        }
        for g in self.domain.ledger.groups() {
            let budgets = group_budgets(g);
            if !budgets.is_empty() {
                want.insert(Level::Group(g.name.clone()), budgets);
            }
        }
        for (p, b) in &self.budgets.pools {
            want.insert(Level::Pool(p.clone()), b.clone());
        }
        // Agents no longer registered keep their budgets (a re-created agent of
        // the same id finds its window's spend) but may not reserve.
        let members: BTreeSet<&AgentId> = registered.iter().collect();
        let have: Vec<(Level, Resource)> = self.budgets.ledger.snapshot(now).into_iter().map(|v| (v.level, v.resource)).collect();
        for (level, resource) in have {
            let keep = match &level {
                Level::Agent(a) if !members.contains(a) => true,
                l => want.get(l).is_some_and(|m| m.contains_key(&resource)),
            };
            if !keep {
                self.budgets.ledger.remove_budget(&level, &resource);
                if let Err(e) = self.recorder.store.record_budget_removed(&level, &resource) {
                    tracing::error!(error = %e, %level, %resource, "removed budget not recorded");
                }
            }
        }
        let known: Vec<AgentId> = self
            .budgets
            .ledger
            .snapshot(now)
            .iter()
            .filter_map(|v| match &v.level {
                Level::Agent(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        for a in known.iter().chain(self.agents.map.keys()) {
            if !members.contains(a) {
                self.budgets.ledger.remove_agent(a);
            }
        }
        for (level, specs) in want {
            for (resource, spec) in specs {
                match self.budgets.ledger.set_budget(level.clone(), resource.clone(), spec, now) {
                    Ok(Some(change)) => self.window_changed(&change, now),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "budget not set"),
                }
            }
        }
    }

    fn window_changed(&mut self, c: &WindowChange, now: Time) {
        let agent = match &c.level {
            Level::Agent(a) => Some(a.as_str().to_owned()),
            _ => None,
        };
        let data = json!({
            "level": c.level.to_string(),
            "resource": c.resource.name(),
            "from": c.from.to_string(),
            "to": c.to.to_string(),
            "dropped": c.dropped,
            "detail": format!("{} {}: window changed from {} to {}; the budget starts clean ({} spent under the old window no longer counted)", c.level, c.resource, c.from, c.to, c.dropped),
        });
        self.recorder.emit(now, events::BUDGET_WINDOW_CHANGED, agent.as_deref(), data);
    }

    /// Rebuild the ledger's reservations and spend from the store (after `sync_budgets`).
    pub(super) fn load_budgets(&mut self) -> Result<(), super::Error> {
        let now = self.clock.now();
        let load = self.recorder.store.load_budgets(&mut self.budgets.ledger, now)?;
        if load.reservations + load.spend_rows + load.spend_dropped > 0 {
            tracing::info!(
                reservations = load.reservations,
                spend_rows = load.spend_rows,
                spend_dropped = load.spend_dropped,
                "budgets taken over from the store"
            );
        }
        Ok(())
    }

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
        if !self.once_a_minute(level, resource, now) {
            return;
        }
        let detail = format!("{level} {resource}: reservation refused: spent {spent} + reserved {reserved} of {hard}");
        let data = json!({"level": level.to_string(), "resource": resource.name(), "spent": spent, "reserved": reserved, "hard": hard, "detail": detail});
        self.recorder.emit(now, events::BUDGET_EXHAUSTED, Some(id.as_str()), data);
    }

    fn once_a_minute(&mut self, level: &Level, resource: &Resource, now: Time) -> bool {
        let key = (level.clone(), resource.clone());
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
    pub(super) fn own_spend(&mut self, id: &AgentId, resource: &Resource, now: Time) -> u64 {
        let own = Level::Agent(id.clone());
        if self.budgets.ledger.budget(&own, resource).is_some() {
            return self.budgets.ledger.snapshot_level(&own, now).iter().find(|v| &v.resource == resource).map_or(0, |v| v.spent);
        }
        self.budgets.meters.snapshot_level(&own, now).iter().find(|v| &v.resource == resource).map_or(0, |v| v.spent)
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
            if !self.once_a_minute(&o.level, &o.resource, now) {
                continue;
            }
            let detail = format!("{} {}: {} used of a hard limit of {}", o.level, o.resource, o.used, o.hard);
            let mut data = over_json(o);
            data["detail"] = json!(detail);
            self.recorder.emit(now, events::BUDGET_OVER_LIMIT, agent.map(AgentId::as_str), data);
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

    /// The budgets that apply to an agent, or every budget (`None`), or a pool's.
    pub(super) fn budget_views(&mut self, of: &BudgetQuery) -> Result<Value, ControlError> {
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
        let reservations: Vec<Value> = self
            .budgets
            .ledger
            .reservations()
            .filter(|r| match of {
                BudgetQuery::All => true,
                BudgetQuery::Agent(a) => r.agent.as_str() == a,
                BudgetQuery::Pool(p) => r.holds.iter().any(|h| h.levels.contains(&Level::Pool(p.clone()))),
            })
            .take(1000)
            .map(reservation_json)
            .collect();
        Ok(
            json!({"at": super::clock::rfc3339(now), "budgets": views.iter().map(|v| view_json(v, now)).collect::<Vec<_>>(), "reservations": reservations}),
        )
    }

    /// A policy throttle on a resource an agent has a budget on: its
    /// reservations are admitted at `target` per window of its own budget.
    /// `None` when the resource is not a budget resource of the agent.
    pub(super) fn throttle_budget(&mut self, id: &AgentId, resource: &Resource, target: u64) -> Option<String> {
        let now = self.clock.now();
        let views = self.budgets.ledger.snapshot_agent(id, now)?;
        let v = views.iter().find(|v| &v.resource == resource)?;
        let window = match v.window {
            WindowSpec::Rolling(r) => r.length(),
            WindowSpec::Calendar(c) => {
                let (start, end) = c.period_at(now);
                Duration::from_millis(end.as_millis().saturating_sub(start.as_millis()))
            }
        };
        let p = Permits::new(target, window, now);
        let text = format!("reservations of {resource} admitted at {:.1} a second ({target} a window of {})", p.per_second(), v.window);
        self.budgets.permits.insert((id.clone(), resource.clone()), p);
        Some(text)
    }

    /// Lift a budget throttle; whether there was one.
    pub(super) fn unthrottle_budget(&mut self, id: &AgentId, resource: &Resource) -> bool {
        self.budgets.permits.remove(&(id.clone(), resource.clone())).is_some()
    }

    /// Budget use of an agent for `ps`: per resource, the tightest level's `spent/hard`.
    pub(super) fn budget_use(&self, id: &AgentId) -> Value {
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

/// The pools an agent draws on.
fn agent_pools(_spec: &allot_core::AgentSpec) -> Vec<String> {
    Vec::new()
}

/// A group's budgets (its totals on custom resources).
fn group_budgets(_g: &allot_core::QuotaGroup) -> BTreeMap<Resource, BudgetSpec> {
    BTreeMap::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_admit_at_their_rate_and_say_when_to_come_back() {
        let t0 = Time::from_secs(1000);
        // 60 a minute: one a second, a balance of 1.
        let mut p = Permits::new(60, Duration::from_secs(60), t0);
        assert_eq!(p.admit(10, t0), Ok(()));
        // The balance is -9: back at 0 after 9 s.
        assert_eq!(p.admit(1, t0), Err(t0.plus(Duration::from_secs(9))));
        assert!(p.admit(1, t0.plus(Duration::from_millis(8_999))).is_err());
        assert_eq!(p.admit(1, t0.plus(Duration::from_secs(9))), Ok(()));
        // Over a long run the admitted amount follows the rate.
        let mut admitted = 0;
        for s in 10..=1010 {
            if p.admit(1, t0.plus(Duration::from_secs(s))).is_ok() {
                admitted += 1;
            }
        }
        assert!((990..=1001).contains(&admitted), "{admitted}");
    }
}
