//! Budgets on custom resources (tokens, `usd_micros`) that cannot be
//! overspent: reserve, then settle.
//!
//! A budget is a hard limit (and an optional soft one) on one custom resource
//! at one [`Level`]: an agent (its limit), a group (its `totals`, shared by
//! its members) or a named pool (drawn on by the agents that name it), over a
//! window ([`WindowSpec`]: rolling in buckets, or calendar; see [`window`]).
//! [`Budgets`] holds the levels, their windows and the open reservations.
//!
//! - [`Budgets::reserve`] holds amounts at every level that applies to the
//!   agent, all or nothing: it succeeds only when, at each,
//!   `spent + reserved + amount <= hard`. Otherwise a [`Refusal`] names the level and resource,
//!   with `retry_after`: when the window frees enough (a rolling window's old
//!   buckets leaving, a calendar reset), else the next expiry of a
//!   reservation held there, or `None` when the amount exceeds the limit.
//! - [`Budgets::settle`] charges the actual amounts into the window in force
//!   at settle time and returns the unused part; a resource left out is
//!   charged as reserved; an overrun (more than reserved, or a resource not
//!   reserved) is charged and reported, never dropped.
//!   [`Budgets::release`] returns everything.
//!   [`Budgets::expire`] ends reservations past their expiry: each level
//!   charges them in full ([`Expiry::Charge`], the default) or releases them,
//!   as its budget says.
//! - [`Budgets::add`] counts a plain usage report as an increment (it
//!   happened: charged even over the limit, and reported).
//! - Fail closed: an unknown agent, a resource without a budget at any of
//!   its levels, or a pool it names that has no budget, refuses.
//! - A window change ([`Budgets::set_budget`]) starts that budget clean and
//!   returns a [`WindowChange`] saying so; a change of limits keeps the spend.
//! - Each mutation returns what a store must record ([`Charge`]s, the
//!   [`Reservation`]), and can be undone when the store cannot record it
//!   ([`Budgets::unreserve`], [`Budgets::unsettle`], [`Budgets::uncharge`]).
//!
//! Invariant (property-tested): when only reservations spend (settles at
//! most what was reserved), spent + reserved <= hard at every level at every
//! instant, and spent + reserved + remaining = hard.

pub mod text;
mod types;
pub mod window;

pub use types::{
    Added, BudgetError, BudgetSpec, BudgetView, Charge, Expired, Expiry, Hold, Level, LevelError, MAX_BUDGET, OverLimit, Refusal,
    Reservation, SettleError, SettleLine, Settled, WindowChange,
};
pub use window::{Calendar, DEFAULT_BUCKETS, Period, Rolling, WindowError, WindowSpec};

use crate::quantity::MAX_DURATION;
use crate::quota::AgentId;
use crate::resource::Resource;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use window::Spend;

/// When a refusal at a budget capped by a cluster's slice says to retry: the
/// node asks for a larger slice as soon as its use nears the cap.
pub const CAPPED_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    spec: BudgetSpec,
    spend: Spend,
    reserved: u64,
    /// A cluster's slice of this budget for this node (cluster mode): no
    /// reservation takes spent + reserved above it either.
    cap: Option<u64>,
}

impl Slot {
    fn used(&self, now: Time) -> u64 {
        self.spend.spent_at(now).saturating_add(self.reserved)
    }

    /// The limit in force: the hard limit, or the node's slice when lower.
    fn hard(&self) -> u64 {
        self.cap.map_or(self.spec.hard, |c| c.min(self.spec.hard))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Member {
    group: Option<String>,
    pools: Vec<String>,
}

/// The budget ledger: budgets by level and resource, agents' memberships,
/// open reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    slots: BTreeMap<Level, BTreeMap<Resource, Slot>>,
    members: BTreeMap<AgentId, Member>,
    open: BTreeMap<u64, Reservation>,
    /// The open reservations by (expiry, id): the next expiry and those due
    /// without looking at every open reservation.
    expiries: BTreeSet<(Time, u64)>,
    next_id: u64,
}

impl Budgets {
    /// An empty ledger; ids start at 1.
    pub fn new() -> Budgets {
        Budgets { next_id: 1, ..Default::default() }
    }

    /// Open `r` (indexed by its expiry).
    fn open_insert(&mut self, r: Reservation) {
        if let Some(old) = self.open.get(&r.id) {
            self.expiries.remove(&(old.expires, old.id));
        }
        self.expiries.insert((r.expires, r.id));
        self.open.insert(r.id, r);
    }

    /// Close reservation `id` (and drop it from the expiry index).
    fn open_remove(&mut self, id: u64) -> Option<Reservation> {
        let r = self.open.remove(&id)?;
        self.expiries.remove(&(r.expires, id));
        Some(r)
    }

    /// Register an agent (or change its memberships): its group and the pools
    /// it draws on. Its open reservations keep the levels they were made at.
    pub fn set_agent(&mut self, agent: AgentId, group: Option<String>, pools: Vec<String>) {
        self.members.insert(agent, Member { group, pools });
    }

    /// Forget an agent (its open reservations stay until settled or expired).
    pub fn remove_agent(&mut self, agent: &AgentId) -> bool {
        self.members.remove(agent).is_some()
    }

    /// Set the budget of `level` on `resource`. A new window (another kind,
    /// length, bucket count, reset time or zone) starts clean and is returned;
    /// new limits under the same window keep the spend. Reservations held
    /// there stay held.
    pub fn set_budget(
        &mut self,
        level: Level,
        resource: Resource,
        spec: BudgetSpec,
        now: Time,
    ) -> Result<Option<WindowChange>, BudgetError> {
        spec.validate(&level, &resource)?;
        let slots = self.slots.entry(level.clone()).or_default();
        match slots.get_mut(&resource) {
            Some(slot) if slot.spec.window == spec.window => {
                slot.spec = spec;
                Ok(None)
            }
            Some(slot) => {
                let change = WindowChange { level, resource, from: slot.spec.window, to: spec.window, dropped: slot.spend.spent_at(now) };
                slot.spec = spec;
                slot.spend = Spend::new(spec.window, now);
                Ok(Some(change))
            }
            None => {
                slots.insert(resource, Slot { spec, spend: Spend::new(spec.window, now), reserved: 0, cap: None });
                Ok(None)
            }
        }
    }

    /// Cap a budget at a cluster's slice for this node (`None`: uncapped);
    /// whether the budget exists. A cap under what is spent and reserved
    /// refuses every reservation there until enough leaves the window.
    pub fn set_cap(&mut self, level: &Level, resource: &Resource, cap: Option<u64>) -> bool {
        match self.slot_mut(level, resource) {
            Some(slot) => {
                slot.cap = cap;
                true
            }
            None => false,
        }
    }

    /// Remove a budget; whether there was one. Open reservations no longer
    /// hold, release or charge anything there.
    pub fn remove_budget(&mut self, level: &Level, resource: &Resource) -> bool {
        let Some(slots) = self.slots.get_mut(level) else { return false };
        let had = slots.remove(resource).is_some();
        if slots.is_empty() {
            self.slots.remove(level);
        }
        // A budget set again later starts without them: they must not be taken off it.
        for r in self.open.values_mut() {
            for h in r.holds.iter_mut().filter(|h| &h.resource == resource) {
                h.levels.retain(|l| l != level);
            }
        }
        had
    }

    /// The budget of a level on a resource.
    pub fn budget(&self, level: &Level, resource: &Resource) -> Option<&BudgetSpec> {
        self.slots.get(level)?.get(resource).map(|s| &s.spec)
    }

    /// The id the next reservation gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// An open reservation.
    pub fn reservation(&self, id: u64) -> Option<&Reservation> {
        self.open.get(&id)
    }

    /// The open reservations, by id.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.open.values()
    }

    /// The earliest expiry of an open reservation: when [`Budgets::expire`] is due.
    pub fn next_expiry(&self) -> Option<Time> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// The levels of `agent` with a budget on `resource`, in order agent,
    /// group, pools; a pool without any budget refuses.
    fn levels(&self, agent: &AgentId, resource: &Resource) -> Result<Vec<Level>, Refusal> {
        let member = self.members.get(agent).ok_or_else(|| Refusal::UnknownAgent(agent.clone()))?;
        if !resource.is_custom() {
            return Err(Refusal::UnknownResource { agent: agent.clone(), resource: resource.clone() });
        }
        let mut out = Vec::with_capacity(2 + member.pools.len());
        let agent_level = Level::Agent(agent.clone());
        if self.has(&agent_level, resource) {
            out.push(agent_level);
        }
        if let Some(g) = &member.group {
            let l = Level::Group(g.clone());
            if self.has(&l, resource) {
                out.push(l);
            }
        }
        for p in &member.pools {
            let l = Level::Pool(p.clone());
            if !self.slots.contains_key(&l) {
                return Err(Refusal::UnknownLevel { agent: agent.clone(), level: l });
            }
            if self.has(&l, resource) {
                out.push(l);
            }
        }
        if out.is_empty() {
            return Err(Refusal::UnknownResource { agent: agent.clone(), resource: resource.clone() });
        }
        Ok(out)
    }

    fn has(&self, level: &Level, resource: &Resource) -> bool {
        self.slots.get(level).is_some_and(|s| s.contains_key(resource))
    }

    fn slot_mut(&mut self, level: &Level, resource: &Resource) -> Option<&mut Slot> {
        self.slots.get_mut(level)?.get_mut(resource)
    }

    /// Reserve `amounts` for `agent` for `ttl` (more than 0, at most 365
    /// days), at every level that applies, all or nothing.
    pub fn reserve(
        &mut self,
        agent: &AgentId,
        amounts: &BTreeMap<Resource, u64>,
        ttl: Duration,
        now: Time,
    ) -> Result<Reservation, Refusal> {
        if amounts.is_empty() {
            return Err(Refusal::Invalid("a reservation needs at least one resource".into()));
        }
        if ttl.is_zero() || ttl > MAX_DURATION {
            return Err(Refusal::Invalid(format!("ttl {}: use more than 0 and at most 365d", crate::quantity::format_duration(ttl))));
        }
        let mut holds = Vec::with_capacity(amounts.len());
        for (resource, &amount) in amounts {
            let levels = self.levels(agent, resource)?;
            for level in &levels {
                let Some(slot) = self.slot_mut(level, resource) else { continue };
                slot.spend.advance(now);
                let spent = slot.spend.spent_at(now);
                let fits = spent.checked_add(slot.reserved).and_then(|u| u.checked_add(amount)).is_some_and(|u| u <= slot.hard());
                if !fits {
                    let (hard, reserved) = (slot.hard(), slot.reserved);
                    let retry_after = self.retry_after(level, resource, amount, now);
                    return Err(Refusal::Exhausted {
                        level: level.clone(),
                        resource: resource.clone(),
                        requested: amount,
                        spent,
                        reserved,
                        hard,
                        retry_after,
                    });
                }
            }
            holds.push(Hold { resource: resource.clone(), amount, levels });
        }
        for hold in &holds {
            for level in &hold.levels {
                if let Some(slot) = self.slot_mut(level, &hold.resource) {
                    slot.reserved += hold.amount;
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let r = Reservation { id, agent: agent.clone(), created: now, expires: now.plus(ttl), holds };
        self.open_insert(r.clone());
        Ok(r)
    }

    fn retry_after(&self, level: &Level, resource: &Resource, amount: u64, now: Time) -> Option<Time> {
        let slot = self.slots.get(level)?.get(resource)?;
        if amount > slot.spec.hard {
            return None;
        }
        if slot.cap.is_some_and(|c| c < slot.spec.hard) {
            // A slice of a cluster total grows when the node is granted more: asked for at once.
            return Some(now.plus(CAPPED_RETRY));
        }
        let next_expiry = || {
            self.open
                .values()
                .filter(|r| r.holds.iter().any(|h| &h.resource == resource && h.levels.contains(level)))
                .map(|r| r.expires)
                .min()
        };
        match slot.spec.hard.checked_sub(slot.reserved).and_then(|room| room.checked_sub(amount)) {
            // The reservations held there alone leave no room: things change when one ends.
            None => next_expiry(),
            Some(target) => slot.spend.frees_to(now, target).or_else(next_expiry),
        }
    }

    /// Charge `amount` at `level` now; the charge to record.
    fn charge(&mut self, level: &Level, resource: &Resource, amount: u64, now: Time, over: &mut Vec<OverLimit>) -> Option<Charge> {
        let slot = self.slot_mut(level, resource)?;
        slot.spend.advance(now);
        let bucket = slot.spend.charge(amount);
        let used = slot.used(now);
        if used > slot.hard() {
            over.push(OverLimit { level: level.clone(), resource: resource.clone(), used, hard: slot.hard() });
        }
        Some(Charge {
            level: level.clone(),
            resource: resource.clone(),
            window: slot.spec.window.key(),
            bucket,
            amount,
            keep_from: slot.spend.keep_from(),
        })
    }

    fn unhold(&mut self, r: &Reservation) {
        for hold in &r.holds {
            for level in &hold.levels {
                if let Some(slot) = self.slot_mut(level, &hold.resource) {
                    slot.reserved = slot.reserved.saturating_sub(hold.amount);
                }
            }
        }
    }

    /// Settle reservation `id` with the `actual` amounts: charged at its
    /// levels now, the unused part returned. A reserved resource left out of
    /// `actual` is charged as reserved; a resource not reserved is charged at
    /// the agent's current levels (refused when it has none). Overruns are
    /// charged and reported.
    pub fn settle(&mut self, id: u64, actual: &BTreeMap<Resource, u64>, now: Time) -> Result<Settled, SettleError> {
        let r = self.open.get(&id).ok_or(SettleError::UnknownReservation(id))?;
        let mut extra = Vec::new();
        for (resource, &amount) in actual {
            if !r.holds.iter().any(|h| &h.resource == resource) {
                let levels = self.levels(&r.agent, resource).map_err(|_| SettleError::UnknownResource {
                    id,
                    agent: r.agent.clone(),
                    resource: resource.clone(),
                })?;
                extra.push(Hold { resource: resource.clone(), amount, levels });
            }
        }
        let Some(r) = self.open_remove(id) else { return Err(SettleError::UnknownReservation(id)) };
        self.unhold(&r);
        let (mut lines, mut charges, mut over) = (Vec::new(), Vec::new(), Vec::new());
        let reserved = r.holds.iter().map(|h| (h, h.amount, actual.get(&h.resource).copied().unwrap_or(h.amount)));
        let extra = extra.iter().map(|h| (h, 0, h.amount));
        for (hold, reserved, used) in reserved.chain(extra) {
            for level in &hold.levels {
                charges.extend(self.charge(level, &hold.resource, used, now, &mut over));
            }
            lines.push(SettleLine {
                resource: hold.resource.clone(),
                reserved,
                actual: used,
                returned: reserved.saturating_sub(used),
                overrun: used.saturating_sub(reserved),
            });
        }
        Ok(Settled { reservation: r, lines, charges, over_limit: over })
    }

    /// Release reservation `id`: everything it held is returned.
    pub fn release(&mut self, id: u64) -> Result<Reservation, SettleError> {
        let r = self.open_remove(id).ok_or(SettleError::UnknownReservation(id))?;
        self.unhold(&r);
        Ok(r)
    }

    /// End every open reservation whose expiry is at or before `now`: each
    /// level charges it in full or releases it as its budget's
    /// [`Expiry`] says.
    pub fn expire(&mut self, now: Time) -> Vec<Expired> {
        let due: Vec<u64> = self.expiries.range(..=(now, u64::MAX)).map(|(_, id)| *id).collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let Some(r) = self.open_remove(id) else { continue };
            self.unhold(&r);
            let (mut charges, mut over) = (Vec::new(), Vec::new());
            for hold in &r.holds {
                for level in &hold.levels {
                    let charged =
                        self.slots.get(level).and_then(|s| s.get(&hold.resource)).is_some_and(|s| s.spec.on_expiry == Expiry::Charge);
                    if charged {
                        charges.extend(self.charge(level, &hold.resource, hold.amount, now, &mut over));
                    }
                }
            }
            out.push(Expired { reservation: r, charges, over_limit: over });
        }
        out
    }

    /// Count a plain usage report of `amount` as spent now at every level of
    /// the agent on the resource (it happened: charged even over a limit, and
    /// reported). Refused for an unknown agent or resource.
    pub fn add(&mut self, agent: &AgentId, resource: &Resource, amount: u64, now: Time) -> Result<Added, Refusal> {
        let levels = self.levels(agent, resource)?;
        let (mut charges, mut over) = (Vec::new(), Vec::new());
        for level in &levels {
            charges.extend(self.charge(level, resource, amount, now, &mut over));
        }
        Ok(Added { charges, over_limit: over })
    }

    /// Undo a reservation the store could not record (fail closed).
    pub fn unreserve(&mut self, r: &Reservation) {
        if self.open_remove(r.id).is_some() {
            self.unhold(r);
        }
    }

    /// Take back charges the store could not record (of [`Budgets::add`] or
    /// [`Budgets::expire`]), while their buckets are still counted.
    pub fn uncharge(&mut self, charges: &[Charge]) {
        for c in charges {
            if let Some(slot) = self.slot_mut(&c.level, &c.resource) {
                if slot.spec.window.key() == c.window {
                    slot.spend.uncharge(c.bucket, c.amount);
                }
            }
        }
    }

    /// Undo a settle the store could not record: its charges taken back and
    /// the reservation open again, held as before.
    pub fn unsettle(&mut self, s: &Settled) {
        self.uncharge(&s.charges);
        self.restore_reservation(s.reservation.clone());
    }

    /// Undo an expiry the store could not record.
    pub fn unexpire(&mut self, e: &Expired) {
        self.uncharge(&e.charges);
        self.restore_reservation(e.reservation.clone());
    }

    /// Put a stored open reservation back (when loading): held again at
    /// those of its levels that still have the budget; later ids follow it.
    pub fn restore_reservation(&mut self, r: Reservation) {
        for hold in &r.holds {
            for level in &hold.levels {
                if let Some(slot) = self.slot_mut(level, &hold.resource) {
                    slot.reserved = slot.reserved.saturating_add(hold.amount);
                }
            }
        }
        self.next_id = self.next_id.max(r.id + 1);
        self.open_insert(r);
    }

    /// Ids continue from at least `next` (when loading).
    pub fn restore_next_id(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// Put a stored spend back (when loading, after the budgets are set):
    /// counted when the budget exists, its window is still `window` (a
    /// window change starts clean) and the bucket is still in it. Whether it
    /// was counted.
    pub fn restore_spend(&mut self, level: &Level, resource: &Resource, window: &str, bucket: u64, amount: u64, now: Time) -> bool {
        let Some(slot) = self.slot_mut(level, resource) else { return false };
        if slot.spec.window.key() != window {
            return false;
        }
        slot.spend.advance(now);
        slot.spend.restore(bucket, amount)
    }

    /// Every budget at `now`, by level and resource.
    pub fn snapshot(&self, now: Time) -> Vec<BudgetView> {
        self.slots.iter().flat_map(|(level, slots)| slots.iter().map(move |(r, s)| view(level, r, s, now))).collect()
    }

    /// One budget at `now`, if there is one.
    pub fn view(&self, level: &Level, resource: &Resource, now: Time) -> Option<BudgetView> {
        self.slots.get(level)?.get(resource).map(|s| view(level, resource, s, now))
    }

    /// The budgets of one level.
    pub fn snapshot_level(&self, level: &Level, now: Time) -> Vec<BudgetView> {
        self.slots.get(level).map(|slots| slots.iter().map(|(r, s)| view(level, r, s, now)).collect()).unwrap_or_default()
    }

    /// The budgets that apply to an agent (its own, its group's, its
    /// pools'), in that order; `None` for an unknown agent.
    pub fn snapshot_agent(&self, agent: &AgentId, now: Time) -> Option<Vec<BudgetView>> {
        let m = self.members.get(agent)?;
        let levels = std::iter::once(Level::Agent(agent.clone()))
            .chain(m.group.iter().map(|g| Level::Group(g.clone())))
            .chain(m.pools.iter().map(|p| Level::Pool(p.clone())));
        Some(levels.flat_map(|l| self.snapshot_level(&l, now)).collect())
    }
}

fn view(level: &Level, resource: &Resource, s: &Slot, now: Time) -> BudgetView {
    let spent = s.spend.spent_at(now);
    BudgetView {
        level: level.clone(),
        resource: resource.clone(),
        window: s.spec.window,
        hard: s.spec.hard,
        cap: s.cap,
        soft: s.spec.soft,
        spent,
        reserved: s.reserved,
        remaining: s.hard().saturating_sub(spent.saturating_add(s.reserved)),
        resets_at: s.spend.next_drop(now),
        on_expiry: s.spec.on_expiry,
    }
}

#[cfg(test)]
mod tests;
