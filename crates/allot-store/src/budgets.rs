//! Budgets (migration 5): open reservations with their holds, spend per
//! level, window and bucket, the next reservation id, and budgets declared
//! through the API.
//!
//! Each reserve, settle, release, expiry or usage report is one transaction,
//! so a SIGKILL at any point leaves either all of it or none: a reservation
//! is held or not, a settle both deletes the reservation and adds its spend
//! (never one without the other: no double spend, no lost hold). The caller
//! records after the core ledger changed and undoes the change when the
//! record fails (fail closed). [`Store::load_budgets`] rebuilds a core
//! [`Budgets`] (its budgets and agents set first) from the rows.

use crate::dto::{DtoError, StoredBudget, StoredBudgetHold, StoredReservation, StoredSpend};
use crate::{Store, StoreError, ms, sql_i};
use allot_core::Time;
use allot_core::budget::{Budgets, Charge, Expired, Level, Reservation, Settled};
use allot_core::resource::Resource;
use rusqlite::{Connection, params};

/// What [`Store::load_budgets`] put back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetLoad {
    /// Open reservations held again.
    pub reservations: usize,
    /// Spend rows counted.
    pub spend_rows: usize,
    /// Spend rows not counted: their budget is gone, its window changed, or
    /// their bucket has left the window.
    pub spend_dropped: usize,
}

const NEXT_ID: &str = "next_reservation_id";

fn put_reservation(tx: &Connection, r: &Reservation) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO budget_reservations (id, agent, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        sql_i(r.id),
        r.agent.as_str(),
        sql_i(r.created.as_millis()),
        sql_i(r.expires.as_millis())
    ])?;
    let mut hold = tx.prepare_cached("INSERT INTO budget_holds (reservation, resource, amount, levels) VALUES (?1, ?2, ?3, ?4)")?;
    for h in &r.holds {
        let levels = h.levels.iter().map(Level::to_string).collect::<Vec<_>>().join(" ");
        hold.execute(params![sql_i(r.id), h.resource.name(), sql_i(h.amount), levels])?;
    }
    tx.prepare_cached(
        "INSERT INTO budget_meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute(params![NEXT_ID, sql_i(r.id + 1)])?;
    Ok(())
}

fn delete_reservation(tx: &Connection, id: u64) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM budget_reservations WHERE id = ?1")?.execute(params![sql_i(id)])
}

/// Spend summed per level, resource, window and bucket, and the oldest
/// bucket still counted per level, resource and window: what a batch writes.
#[derive(Default)]
struct Spends {
    add: std::collections::BTreeMap<(String, String, String, u64), u64>,
    keep_from: std::collections::BTreeMap<(String, String, String), u64>,
}

impl Spends {
    fn push(&mut self, charges: &[Charge]) {
        for c in charges {
            let (level, resource) = (c.level.to_string(), c.resource.name().to_owned());
            let sum = self.add.entry((level.clone(), resource.clone(), c.window.clone(), c.bucket)).or_default();
            *sum = sum.saturating_add(c.amount);
            let k = self.keep_from.entry((level, resource, c.window.clone())).or_default();
            *k = (*k).max(c.keep_from);
        }
    }

    /// One upsert per bucket and one prune per budget window.
    fn write(&self, tx: &Connection) -> rusqlite::Result<()> {
        let mut add = tx.prepare_cached(
            "INSERT INTO budget_spend (level, resource, window, bucket, amount) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(level, resource, window, bucket) DO UPDATE SET amount = \
             CASE WHEN amount > 9223372036854775807 - excluded.amount THEN 9223372036854775807 ELSE amount + excluded.amount END",
        )?;
        for ((level, resource, window, bucket), amount) in &self.add {
            add.execute(params![level, resource, window, sql_i(*bucket), sql_i(*amount)])?;
        }
        let mut prune = tx.prepare_cached("DELETE FROM budget_spend WHERE level = ?1 AND resource = ?2 AND window = ?3 AND bucket < ?4")?;
        for ((level, resource, window), keep_from) in &self.keep_from {
            prune.execute(params![level, resource, window, sql_i(*keep_from)])?;
        }
        Ok(())
    }
}

/// One budget change to record, for [`Store::record_budget_batch`].
#[derive(Clone, Copy, Debug)]
pub enum BudgetRecord<'a> {
    /// A new reservation.
    Reserved(&'a Reservation),
    /// A settle.
    Settled(&'a Settled),
    /// A release (the reservation's id).
    Released(u64),
    /// Expiries.
    Expired(&'a [Expired]),
    /// Spend of a usage report.
    Charged(&'a [Charge]),
}

fn put_record(tx: &Connection, r: &BudgetRecord<'_>, spends: &mut Spends) -> rusqlite::Result<()> {
    match r {
        BudgetRecord::Reserved(r) => put_reservation(tx, r),
        BudgetRecord::Settled(s) => {
            delete_reservation(tx, s.reservation.id)?;
            spends.push(&s.charges);
            Ok(())
        }
        BudgetRecord::Released(id) => delete_reservation(tx, *id).map(drop),
        BudgetRecord::Expired(expired) => {
            for e in *expired {
                delete_reservation(tx, e.reservation.id)?;
                spends.push(&e.charges);
            }
            Ok(())
        }
        BudgetRecord::Charged(charges) => {
            spends.push(charges);
            Ok(())
        }
    }
}

impl Store {
    /// `f` all or nothing: a transaction of its own, or a savepoint in a batch ([`Store::begin_batch`]).
    fn budget_tx(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |source| StoreError::Sql { path: path.clone(), source };
        let tx = self.conn.savepoint().map_err(e)?;
        f(&tx).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Record a new reservation (one transaction).
    pub fn record_reservation(&mut self, r: &Reservation) -> Result<(), StoreError> {
        self.record_budget_batch(&[BudgetRecord::Reserved(r)])
    }

    /// Record a settle: the reservation gone and its spend added (one transaction).
    pub fn record_settle(&mut self, s: &Settled) -> Result<(), StoreError> {
        self.record_budget_batch(&[BudgetRecord::Settled(s)])
    }

    /// Record a release: the reservation gone.
    pub fn record_release(&mut self, id: u64) -> Result<(), StoreError> {
        self.record_budget_batch(&[BudgetRecord::Released(id)])
    }

    /// Record expiries: the reservations gone and what they charged (one transaction).
    pub fn record_expired(&mut self, expired: &[Expired]) -> Result<(), StoreError> {
        self.record_budget_batch(&[BudgetRecord::Expired(expired)])
    }

    /// Record spend from a usage report (one transaction).
    pub fn record_charges(&mut self, charges: &[Charge]) -> Result<(), StoreError> {
        self.record_budget_batch(&[BudgetRecord::Charged(charges)])
    }

    /// Record several changes in one transaction (group commit: a caller
    /// answers the requests of a batch only after it returns, and undoes
    /// every change of the batch in the core when it fails). Each change
    /// is still all or nothing; so is the batch.
    pub fn record_budget_batch(&mut self, records: &[BudgetRecord<'_>]) -> Result<(), StoreError> {
        self.budget_tx(|tx| {
            let mut spends = Spends::default();
            records.iter().try_for_each(|r| put_record(tx, r, &mut spends))?;
            // The batch's spend summed per bucket: one write per bucket, not per charge.
            spends.write(tx)
        })
    }

    /// Record that a budget was removed: its spend deleted and open
    /// reservations no longer holding there (as `Budgets::remove_budget`).
    pub fn record_budget_removed(&mut self, level: &Level, resource: &Resource) -> Result<(), StoreError> {
        let level = level.to_string();
        self.budget_tx(|tx| {
            tx.execute("DELETE FROM budget_spend WHERE level = ?1 AND resource = ?2", params![level, resource.name()])?;
            tx.execute(
                "UPDATE budget_holds SET levels = trim(replace(' ' || levels || ' ', ' ' || ?1 || ' ', ' ')) WHERE resource = ?2",
                params![level, resource.name()],
            )?;
            Ok(())
        })
    }

    /// Record that a budget's window changed: its spend deleted (the budget
    /// starts clean; rows of the old window must not count again should the
    /// window come back before they leave it). Open reservations stay held.
    pub fn record_budget_window_changed(&mut self, level: &Level, resource: &Resource) -> Result<(), StoreError> {
        let level = level.to_string();
        self.budget_tx(|tx| {
            tx.execute("DELETE FROM budget_spend WHERE level = ?1 AND resource = ?2", params![level, resource.name()])?;
            Ok(())
        })
    }

    /// Every open reservation, by id.
    pub fn reservations(&self) -> Result<Vec<StoredReservation>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.id, r.agent, r.created_ms, r.expires_ms, h.resource, h.amount, h.levels \
                 FROM budget_reservations r LEFT JOIN budget_holds h ON h.reservation = r.id ORDER BY r.id, h.resource",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| <(i64, String, i64, i64, Option<String>, Option<i64>, Option<String>)>::try_from(r))
            .map_err(self.sql())?;
        let mut out: Vec<StoredReservation> = Vec::new();
        for row in rows {
            let (id, agent, created, expires, resource, amount, levels) = row.map_err(self.sql())?;
            if out.last().is_none_or(|r| r.id != ms(id)) {
                out.push(StoredReservation { id: ms(id), agent, created_ms: ms(created), expires_ms: ms(expires), holds: vec![] });
            }
            if let (Some(resource), Some(amount), Some(levels), Some(r)) = (resource, amount, levels, out.last_mut()) {
                let levels = levels.split_whitespace().map(str::to_owned).collect();
                r.holds.push(StoredBudgetHold { resource, amount: ms(amount), levels });
            }
        }
        Ok(out)
    }

    /// Every spend row.
    pub fn budget_spend(&self) -> Result<Vec<StoredSpend>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT level, resource, window, bucket, amount FROM budget_spend ORDER BY level, resource, window, bucket")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredSpend { level: r.get(0)?, resource: r.get(1)?, window: r.get(2)?, bucket: ms(r.get(3)?), amount: ms(r.get(4)?) })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The id the next reservation must have at least (1 when none was made).
    pub fn next_reservation_id(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE((SELECT value FROM budget_meta WHERE key = ?1), 1)", params![NEXT_ID], |r| r.get::<_, i64>(0))
            .map(ms)
            .map_err(self.sql())
    }

    /// Put the stored state back into `budgets`, whose budgets and agents are
    /// already set: the next id, every open reservation (held again), and
    /// the spend still in its window. A row that does not convert is an
    /// error naming it (the ledger is then incomplete: do not serve from it).
    pub fn load_budgets(&self, budgets: &mut Budgets, now: Time) -> Result<BudgetLoad, StoreError> {
        let bad = |what: String| move |e: DtoError| StoreError::Budget { path: self.path.clone(), what, problem: e.to_string() };
        let mut load = BudgetLoad::default();
        budgets.restore_next_id(self.next_reservation_id()?);
        for r in self.reservations()? {
            let core = r.to_core().map_err(bad(format!("reservation {}", r.id)))?;
            budgets.restore_reservation(core);
            load.reservations += 1;
        }
        for s in self.budget_spend()? {
            let (level, resource) = s.key().map_err(bad(format!("spend of {} {}", s.level, s.resource)))?;
            if budgets.restore_spend(&level, &resource, &s.window, s.bucket, s.amount, now) {
                load.spend_rows += 1;
            } else {
                load.spend_dropped += 1;
            }
        }
        Ok(load)
    }

    /// Store a budget declared through the API (insert or replace).
    pub fn put_budget(&self, level: &Level, resource: &Resource, b: &StoredBudget, at_ms: u64) -> Result<(), StoreError> {
        let spec = serde_json::to_string(b).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            what: format!("budget {level} {resource}"),
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO budgets (level, resource, spec, updated_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(level, resource) DO UPDATE SET spec = ?3, updated_ms = ?4",
                params![level.to_string(), resource.name(), spec, sql_i(at_ms)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Replace every budget of `level` declared through the API by `budgets`
    /// (none: the level's rows deleted), in one transaction.
    pub fn replace_level_budgets(&mut self, level: &Level, budgets: &[(Resource, StoredBudget)], at_ms: u64) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(budgets.len());
        for (r, b) in budgets {
            let spec = serde_json::to_string(b).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: format!("budget {level} {r}"),
                source,
            })?;
            rows.push((r.name().to_owned(), spec));
        }
        let level = level.to_string();
        self.budget_tx(|tx| {
            tx.execute("DELETE FROM budgets WHERE level = ?1", params![level])?;
            for (r, spec) in &rows {
                tx.execute(
                    "INSERT INTO budgets (level, resource, spec, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![level, r, spec, sql_i(at_ms)],
                )?;
            }
            Ok(())
        })
    }

    /// Delete a budget declared through the API; whether there was one.
    pub fn delete_budget(&self, level: &Level, resource: &Resource) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM budgets WHERE level = ?1 AND resource = ?2", params![level.to_string(), resource.name()])
            .map_err(self.sql())?;
        Ok(n > 0)
    }

    /// Every budget declared through the API: (level, resource, budget), as stored.
    pub fn stored_budgets(&self) -> Result<Vec<(String, String, StoredBudget)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT level, resource, spec FROM budgets ORDER BY level, resource").map_err(self.sql())?;
        let rows = stmt.query_map([], |r| <(String, String, String)>::try_from(r)).map_err(self.sql())?;
        rows.map(|row| {
            let (level, resource, spec) = row.map_err(self.sql())?;
            let b = self.json(&spec, || format!("budget {level} {resource}"))?;
            Ok((level, resource, b))
        })
        .collect()
    }
}
