//! Budgets in the fleet file (issue 12): a budget value (the short form
//! `"5M/day"` or a table `{ hard, soft, per | calendar, day, at, tz,
//! on_expiry }`, read by core `budget::text`), group totals on custom
//! resources, `[pools.NAME]` tables, and the pools an agent draws on.

use super::context::{Ctx, Value, join, key_span};
use allot_core::Resource;
use allot_core::budget::BudgetSpec;
use allot_core::budget::text::{BUDGET_FORMS, BudgetText, parse_budget, parse_budget_str};
use allot_core::group::valid_group_name;
use std::collections::{BTreeMap, BTreeSet};
use toml::de::DeValue;

/// The keys of a budget's table form.
const KEYS: &[&str] = &["hard", "soft", "per", "calendar", "day", "at", "tz", "on_expiry"];

/// Budgets of one pool, by resource.
pub(super) type PoolBudgets = BTreeMap<Resource, BudgetSpec>;

impl Ctx<'_> {
    /// A budget on `resource`: a string or integer in the short form, or a table.
    pub(super) fn budget(&mut self, v: &Value<'_>, resource: &Resource, field: &str) -> Option<BudgetSpec> {
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_budget_str(field, resource, s),
            DeValue::Integer(i) => parse_budget_str(field, resource, &i.to_string()),
            DeValue::Table(t) => {
                self.only(t, field, KEYS);
                let errors_before = self.errors.len();
                let text = |cx: &mut Self, key: &str| -> Option<String> {
                    let kv = t.get(key)?;
                    let f = join(field, key);
                    match kv.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        DeValue::Integer(i) if matches!(key, "hard" | "soft") => Some(i.to_string()),
                        _ => {
                            cx.expected(kv, &f, if matches!(key, "hard" | "soft") { "a count" } else { "a string" });
                            None
                        }
                    }
                };
                let Some(hard) = text(self, "hard") else {
                    if t.get("hard").is_none() {
                        self.err(v.span(), field, format!("missing hard (accepted forms: {BUDGET_FORMS})"));
                    }
                    return None;
                };
                let day = t.get("day").and_then(|d| {
                    let f = join(field, "day");
                    let n = self.integer(d, &f)?;
                    let day = u8::try_from(n).ok().filter(|d| (1..=28).contains(d));
                    if day.is_none() {
                        self.err(d.span(), &f, format!("day {n} of the month: use 1..=28 (every month has it)"));
                    }
                    day
                });
                let bt = BudgetText {
                    hard,
                    soft: text(self, "soft"),
                    per: text(self, "per"),
                    calendar: text(self, "calendar"),
                    day,
                    at: text(self, "at"),
                    tz: text(self, "tz"),
                    on_expiry: text(self, "on_expiry"),
                };
                if self.errors.len() != errors_before {
                    return None;
                }
                parse_budget(field, resource, &bt)
            }
            _ => {
                self.expected(v, field, &format!("a budget ({BUDGET_FORMS})"));
                return None;
            }
        };
        match parsed {
            Ok(spec) => Some(spec),
            Err(e) => {
                // Reported at the key at fault, when it is one of the table's.
                let span = e.field.strip_prefix(&format!("{field}.")).map_or_else(|| v.span(), |key| key_span(v, key));
                self.err(span, &e.field, e.problem);
                None
            }
        }
    }

    /// The names of `av`, an agent's `pools` array: each declared in the
    /// file's `[pools]`, none twice.
    pub(super) fn pool_names(&mut self, av: &Value<'_>, field: &str, declared: &BTreeMap<String, PoolBudgets>) -> Option<Vec<String>> {
        let DeValue::Array(items) = av.get_ref() else {
            self.expected(av, field, "an array of pool names");
            return None;
        };
        let errors_before = self.errors.len();
        let mut names = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(name) = self.string(item, &f) else { continue };
            if !declared.contains_key(&name) {
                let known = if declared.is_empty() {
                    "the file declares none ([pools.NAME])".to_owned()
                } else {
                    format!("declared pools are {}", declared.keys().cloned().collect::<Vec<_>>().join(", "))
                };
                self.err(item.span(), &f, format!("unknown pool {name:?}: {known}"));
            } else if !seen.insert(name.clone()) {
                self.err(item.span(), &f, format!("pool {name:?} is named twice"));
            } else {
                names.push(name);
            }
        }
        (self.errors.len() == errors_before).then_some(names)
    }
}

/// The `[pools]` table: each pool's budgets by resource (custom resources only).
pub(super) fn parse_pools(cx: &mut Ctx<'_>, pv: &Value<'_>) -> BTreeMap<String, PoolBudgets> {
    let mut pools = BTreeMap::new();
    let Some(pt) = cx.table(pv, "pools") else { return pools };
    for (k, v) in pt.iter() {
        let name = k.get_ref().to_string();
        let field = format!("pools.{name}");
        if !valid_group_name(&name) {
            cx.err(k.span(), &field, format!("invalid pool name {name:?}: use 1..64 characters from [a-z0-9_], as for groups"));
            continue;
        }
        // Declared even when a budget of it is wrong, so that its agents are not reported again.
        let Some(t) = cx.table(v, &field) else {
            pools.insert(name, BTreeMap::new());
            continue;
        };
        let mut budgets = BTreeMap::new();
        for (rk, bv) in t.iter() {
            let f = join(&field, rk.get_ref());
            let Some(r) = cx.resource(rk, &f) else { continue };
            if let Some(b) = cx.budget(bv, &r, &f) {
                budgets.insert(r, b);
            }
        }
        if t.is_empty() {
            cx.err(
                v.span(),
                &field,
                "a pool needs at least one budget (tokens = \"5M/day\", usd_micros = { hard = \"50M\", calendar = \"month\" }, ...)",
            );
        }
        pools.insert(name, budgets);
    }
    pools
}
