//! `[groups.NAME]`: new quota groups (from scratch or extending another) and
//! changes to built-in ones, registered in the ledger in file order so that
//! later groups and the agents can use them. Totals on custom resources are
//! the group's budgets (`totals = { tokens = "5M/day" }`).

use super::context::{Ctx, Key, Table, Value, join, key_span};
use allot_core::group::{QuotaGroup, ScalingPolicy, valid_group_name};
use allot_core::limits::Action;
use allot_core::{Ledger, Resource};
use std::collections::BTreeMap;

const KEYS: &[&str] = &["extends", "description", "scaling_policy", "limits", "totals", "custom_handler"];

/// The `[groups]` table `gv`: each valid group is registered in `ledger` and returned.
pub(super) fn parse_groups(cx: &mut Ctx<'_>, gv: &Value<'_>, ledger: &mut Ledger) -> Vec<QuotaGroup> {
    let mut groups = Vec::new();
    let Some(gt) = cx.table(gv, "groups") else { return groups };
    for (k, v) in gt.iter() {
        let field = format!("groups.{}", k.get_ref());
        if let Some(g) = parse_group(cx, ledger, k, v, &field) {
            let result = if ledger.group(&g.name).is_some() { ledger.set_group(g.clone()) } else { ledger.add_group(g.clone()) };
            match result {
                Ok(()) => groups.push(g),
                Err(e) => cx.err(v.span(), &field, e.to_string()),
            }
        }
    }
    groups
}

/// The names of the groups in `ledger`, for errors about an unknown one.
pub(super) fn known_groups(ledger: &Ledger) -> String {
    ledger.groups().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn parse_group(cx: &mut Ctx<'_>, ledger: &Ledger, key: &Key<'_>, v: &Value<'_>, field: &str) -> Option<QuotaGroup> {
    let name = key.get_ref().to_string();
    if !valid_group_name(&name) {
        cx.err(key.span(), field, format!("invalid group name {name:?}: use 1..64 characters from [a-z0-9_]"));
        return None;
    }
    let t = cx.table(v, field)?;
    cx.only(t, field, KEYS);
    let mut g = base(cx, ledger, t, &name, field)?;
    g.name = name;
    let errors_before = cx.errors.len();
    if let Some(s) = t.get("description").and_then(|d| cx.string(d, &format!("{field}.description"))) {
        g.description = s;
    }
    if let Some(p) = t.get("scaling_policy") {
        let policies = [("fixed", ScalingPolicy::Fixed), ("proportional", ScalingPolicy::Proportional)];
        if let Some(policy) = cx.choice(p, &format!("{field}.scaling_policy"), "scaling policy", &policies) {
            g.scaling_policy = policy;
        }
    }
    if let Some(h) = t.get("custom_handler") {
        g.custom_handler = cx.handler(h, &format!("{field}.custom_handler"));
    }
    if let Some(l) = t.get("limits") {
        limits(cx, &mut g, l, field);
    }
    if let Some(tv) = t.get("totals") {
        totals(cx, &mut g, tv, field);
    }
    (cx.errors.len() == errors_before).then_some(g)
}

/// What the group `name` starts from: the group it extends, the built-in
/// group of that name, or nothing; `None` when `extends` is wrong.
fn base(cx: &mut Ctx<'_>, ledger: &Ledger, t: &Table<'_>, name: &str, field: &str) -> Option<QuotaGroup> {
    let base = match t.get("extends") {
        Some(e) => {
            let ef = format!("{field}.extends");
            let base_name = cx.string(e, &ef)?;
            let Some(b) = ledger.group(&base_name) else {
                cx.err(e.span(), &ef, format!("unknown group {base_name:?}: known groups are {}", known_groups(ledger)));
                return None;
            };
            Some(b.clone())
        }
        None => ledger.group(name).cloned(),
    };
    Some(base.unwrap_or_else(|| QuotaGroup {
        name: name.to_owned(),
        description: String::new(),
        limits: BTreeMap::new(),
        totals: BTreeMap::new(),
        budgets: BTreeMap::new(),
        scaling_policy: ScalingPolicy::Fixed,
        custom_handler: None,
    }))
}

/// `limits`: each override applied to the limit the group has so far; every
/// error is reported at its own limit (so they come out in file order).
fn limits(cx: &mut Ctx<'_>, g: &mut QuotaGroup, l: &Value<'_>, field: &str) {
    let lf = format!("{field}.limits");
    for (resource, o) in cx.limits(l, &lf) {
        let rf = format!("{lf}.{resource}");
        let span = key_span(l, resource.name());
        match o.apply(g.limits.get(&resource), &rf) {
            Ok(limit) if limit.action == Action::Custom && g.custom_handler.is_none() => {
                cx.err(span, &rf, NO_HANDLER);
            }
            Ok(limit) => {
                g.limits.insert(resource, limit);
            }
            Err(e) => cx.err(span, &rf, e.problem),
        }
    }
}

/// A `custom` action needs a handler.
pub(super) const NO_HANDLER: &str = "action is custom but no custom_handler is configured for the group or agent";

/// The smallest memory total the kernel keeps above 0 (it rounds to whole pages).
const PAGE: u64 = 4096;

/// `totals`: the group's ceilings over all its agents; on a custom resource
/// a budget shared by its members, with its window (`tokens = "5M/day"`).
fn totals(cx: &mut Ctx<'_>, g: &mut QuotaGroup, tv: &Value<'_>, field: &str) {
    let tf = format!("{field}.totals");
    let Some(tt) = cx.table(tv, &tf) else { return };
    for (k, qv) in tt.iter() {
        let f = join(&tf, k.get_ref());
        let Some(r) = cx.resource(k, &f) else { continue };
        if r.is_custom() {
            if let Some(b) = cx.budget(qv, &r, &f) {
                g.totals.remove(&r);
                g.budgets.insert(r, b);
            }
            continue;
        }
        if let Some(q) = cx.quantity(qv, &r, &f) {
            // The kernel holds totals on the group's cgroup: 0 (memory under a page is 0 there) lets no member start or fork.
            let floor = if r == Resource::Memory { PAGE } else { 1 };
            if q.value < floor {
                let least = match r {
                    Resource::Memory => "4Ki (one page)",
                    Resource::Cpu => "1m",
                    _ => "1",
                };
                cx.err(qv.span(), &f, format!("a group total of {} lets no member run; give at least {least}", q.value));
                continue;
            }
            g.totals.insert(r, q.value);
        }
    }
}
