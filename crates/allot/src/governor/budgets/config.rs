//! Budget configuration: reconciled from the quotas, the groups and the pools
//! (fleet file and API), window changes published (and the old window's
//! stored spend deleted), the ledger rebuilt from the store.

use super::super::control::ControlError;
use super::super::{Backend, Governor};
use super::views::view_json;
use allot_core::budget::{BudgetSpec, Level, WindowChange};
use allot_core::{AgentId, Resource, Time, events};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

impl<B: Backend> Governor<B> {
    /// Reconcile the budget ledger with the quota ledger and the pools:
    /// every registered agent's memberships and custom limits, every group's
    /// budgets, every pool. Window changes are published; budgets no longer
    /// configured are removed (their spend with them).
    pub(in crate::governor) fn sync_budgets(&mut self) {
        // Spend charged under the windows in force is recorded before any of them changes.
        self.flush_budgets();
        let now = self.clock.now();
        let mut want: BTreeMap<Level, BTreeMap<Resource, BudgetSpec>> = BTreeMap::new();
        let registered: Vec<AgentId> = self.domain.ledger.agents().cloned().collect();
        for id in &registered {
            let Some(q) = self.domain.ledger.quota(id) else { continue };
            let pools = self.agents.get(id).map(|a| a.def.spec.pools.clone()).unwrap_or_default();
            self.budgets.ledger.set_agent(id.clone(), Some(q.group.clone()), pools.clone());
            self.budgets.meters.set_agent(id.clone(), None, Vec::new());
            let own = want.entry(Level::Agent(id.clone())).or_default();
            for (r, l) in q.limits.iter().filter(|(r, _)| r.is_custom()) {
                own.insert(r.clone(), BudgetSpec::from_limit(l));
            }
        }
        for g in self.domain.ledger.groups() {
            let budgets = g.budgets.clone();
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
        self.cap_cluster_budgets(now);
    }

    fn window_changed(&mut self, c: &WindowChange, now: Time) {
        // The stored spend goes too: else a restart would count it again once the old window is back.
        if let Err(e) = self.recorder.store.record_budget_window_changed(&c.level, &c.resource) {
            tracing::error!(error = %e, level = %c.level, resource = %c.resource, "window change not recorded: the old spend may count again after a restart");
        }
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

    /// The pools declared or replaced through the API, from the store (before `sync_budgets`).
    pub(in crate::governor) fn load_stored_pools(&mut self) -> Result<(), crate::governor::Error> {
        let mut stored: BTreeMap<String, BTreeMap<Resource, BudgetSpec>> = BTreeMap::new();
        for (level, resource, b) in self.recorder.store.stored_budgets()? {
            let what = format!("stored budget {level} {resource}");
            let Ok(Level::Pool(p)) = level.parse::<Level>() else {
                tracing::warn!("{what}: not a pool; ignored");
                continue;
            };
            let r: Resource = resource.parse().map_err(|e| format!("{what}: {e}"))?;
            let spec = b.to_core().map_err(|e| format!("{what}: {e}"))?;
            stored.entry(p).or_default().insert(r, spec);
        }
        for (p, budgets) in stored {
            self.budgets.api_pools.insert(p.clone());
            self.budgets.pools.insert(p, budgets);
        }
        Ok(())
    }

    /// `PUT /v1/pools/{name}`: the pool's budgets replaced whole (a pool of
    /// the fleet file too: the API's version is stored and wins over the
    /// file's); windows that change start clean.
    pub(in crate::governor) fn put_pool(&mut self, name: &str, budgets: BTreeMap<Resource, BudgetSpec>) -> Result<Value, ControlError> {
        let level = Level::Pool(name.to_owned());
        let rows: Vec<(Resource, allot_store::dto::StoredBudget)> =
            budgets.iter().map(|(r, b)| (r.clone(), allot_store::dto::StoredBudget::from_core(b))).collect();
        let now = self.clock.now();
        self.recorder.store.replace_level_budgets(&level, &rows, now.as_millis()).map_err(|e| ControlError::Unrecorded(e.to_string()))?;
        let created = !self.budgets.pools.contains_key(name);
        self.budgets.api_pools.insert(name.to_owned());
        self.budgets.pools.insert(name.to_owned(), budgets);
        self.sync_budgets();
        let views = self.budgets.ledger.snapshot_level(&level, now);
        self.recorder.emit(
            now,
            events::BUDGET_POOL_CHANGED,
            None,
            json!({"pool": name, "created": created, "budgets": views.iter().map(|v| view_json(v, now)).collect::<Vec<_>>()}),
        );
        Ok(json!({"pool": name, "created": created, "budgets": views.iter().map(|v| view_json(v, now)).collect::<Vec<_>>()}))
    }

    /// `DELETE /v1/pools/{name}`: a pool declared through the API is removed
    /// (its spend with it), or a replaced fleet pool goes back to the file's;
    /// refused while a registered agent draws on it, and for a pool only the
    /// fleet file declares.
    pub(in crate::governor) fn delete_pool(&mut self, name: &str) -> Result<Value, ControlError> {
        if !self.budgets.pools.contains_key(name) {
            return Err(ControlError::NoPool(name.to_owned()));
        }
        if !self.budgets.api_pools.contains(name) {
            return Err(ControlError::Refused {
                field: "pool".into(),
                message: format!("pool {name:?} is declared in the fleet file: change the file (the API replaces it with PUT)"),
            });
        }
        let fleet = self.budgets.fleet_pools.get(name).cloned();
        if fleet.is_none() {
            let users: Vec<String> = self
                .domain
                .ledger
                .agents()
                .filter(|a| self.agents.get(a).is_some_and(|x| x.def.spec.pools.iter().any(|p| p == name)))
                .map(ToString::to_string)
                .collect();
            if !users.is_empty() {
                return Err(ControlError::GroupInUse(format!(
                    "pool {name:?} is drawn on by {}: their reservations would be refused",
                    users.join(", ")
                )));
            }
        }
        let level = Level::Pool(name.to_owned());
        let now = self.clock.now();
        self.recorder.store.replace_level_budgets(&level, &[], now.as_millis()).map_err(|e| ControlError::Unrecorded(e.to_string()))?;
        self.budgets.api_pools.remove(name);
        match &fleet {
            Some(b) => self.budgets.pools.insert(name.to_owned(), b.clone()),
            None => self.budgets.pools.remove(name),
        };
        self.sync_budgets();
        let detail = if fleet.is_some() { "the fleet file's budgets are in force again" } else { "removed" };
        self.recorder.emit(now, events::BUDGET_POOL_CHANGED, None, json!({"pool": name, "deleted": true, "detail": detail}));
        Ok(json!({"pool": name, "deleted": true, "detail": detail}))
    }

    /// Rebuild the ledger's reservations and spend from the store (after `sync_budgets`).
    pub(in crate::governor) fn load_budgets(&mut self) -> Result<(), crate::governor::Error> {
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
}
