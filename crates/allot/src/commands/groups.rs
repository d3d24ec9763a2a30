//! `allot groups`: the quota groups with every limit, total and budget.

use super::{Error, print};
use crate::cli::GroupsArgs;
use crate::output::table;
use allot_core::budget::BudgetSpec;
use allot_core::budget::text::describe;
use allot_core::quantity::{Quantity, format, format_duration};
use allot_core::{Ledger, QuotaGroup, Resource};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;

pub(crate) fn run(args: &GroupsArgs) -> Result<ExitCode, Error> {
    let ledger = match &args.fleet {
        None => Ledger::with_builtin_groups(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            crate::fleet::parse(&text)
                .map_err(|errs| {
                    let lines: Vec<String> = errs.iter().map(|e| format!("{}:{e}", path.display())).collect();
                    format!("invalid fleet file (run `allot validate {}`):\n{}", path.display(), lines.join("\n"))
                })?
                .ledger
        }
    };
    let groups: Vec<&QuotaGroup> = ledger.groups().collect();
    if args.json {
        let arr: Vec<Value> = groups.iter().map(|g| to_json(g)).collect();
        print(&format!("{}\n", serde_json::to_string_pretty(&arr)?))?;
    } else {
        print(&to_text(&groups))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON shape promised to users: values in internal units.
pub(crate) fn to_json(g: &QuotaGroup) -> Value {
    let mut limits = Map::new();
    for (r, l) in &g.limits {
        let mut o = json!({
            "soft": l.soft,
            "hard": l.hard,
            "burst": l.burst,
            "action": l.action.name(),
            "burst_window_ms": allot_core::time::duration_millis(l.burst_window),
            "unit": r.unit().name(),
        });
        if let Some(w) = l.window {
            o["window"] = json!(w.suffix());
        }
        limits.insert(r.name().to_owned(), o);
    }
    let totals: Map<String, Value> = g.totals.iter().map(|(r, v)| (r.name().to_owned(), json!(v))).collect();
    json!({
        "name": g.name,
        "description": g.description,
        "limits": limits,
        "totals": totals,
        "budgets": budgets_json(&g.budgets),
        "scaling_policy": g.scaling_policy,
    })
}

/// Budgets by resource as JSON: the stored shape (`hard`, `soft`, `window`,
/// `on_expiry`, in internal units) and `text`, the budget in one line.
pub(crate) fn budgets_json(budgets: &BTreeMap<Resource, BudgetSpec>) -> Value {
    let mut out = Map::new();
    for (r, b) in budgets {
        let mut v = serde_json::to_value(allot_store::dto::StoredBudget::from_core(b)).unwrap_or(Value::Null);
        v["text"] = json!(describe(b));
        out.insert(r.name().to_owned(), v);
    }
    Value::Object(out)
}

/// One line per budget: `  budget tokens: 5M/day`.
pub(crate) fn budgets_text(budgets: &BTreeMap<Resource, BudgetSpec>, indent: &str) -> String {
    budgets.iter().map(|(r, b)| format!("{indent}budget {r}: {}\n", describe(b))).collect()
}

fn to_text(groups: &[&QuotaGroup]) -> String {
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}  ({})\n", g.name, g.description));
        let mut rows = vec![vec![
            "  resource".into(),
            "soft".into(),
            "hard".into(),
            "burst".into(),
            "burst window".into(),
            "action".into(),
            "group total".into(),
        ]];
        for (r, l) in &g.limits {
            let f = |v| format(r.unit(), Quantity { value: v, window: l.window });
            rows.push(vec![
                format!("  {r}"),
                f(l.soft),
                f(l.hard),
                f(l.burst),
                format_duration(l.burst_window),
                l.action.name().into(),
                g.totals.get(r).map_or_else(|| "-".into(), |t| f(*t)),
            ]);
        }
        for (r, t) in g.totals.iter().filter(|(r, _)| !g.limits.contains_key(*r)) {
            rows.push(vec![
                format!("  {r}"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format(r.unit(), Quantity::new(*t)),
            ]);
        }
        out.push_str(&table(&rows));
        out.push_str(&budgets_text(&g.budgets, "  "));
        if g.scaling_policy != allot_core::group::ScalingPolicy::Fixed {
            out.push_str("  totals scale with members (proportional)\n");
        }
    }
    out
}
