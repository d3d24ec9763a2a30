//! Request bodies (wire types, unknown fields refused) and their checked
//! conversion into core types; every error names the field.

use super::error::ApiError;
use crate::fleet::{AgentDef, Restart};
use allot_core::limits::LimitOverride;
use allot_core::{AgentId, AgentSpec, Priority, QuotaGroup, Resource};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One resource's limits in a body; quantities as numbers or strings (`"300Mi"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitBody {
    soft: Option<Value>,
    hard: Option<Value>,
    burst: Option<Value>,
    burst_window: Option<String>,
    action: Option<String>,
}

/// `PATCH /v1/agents/{id}/quota`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaBody {
    pub(super) limits: BTreeMap<String, LimitBody>,
}

/// `POST /v1/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartBody {
    pub(super) name: String,
    pub(super) group: String,
    pub(super) command: Vec<String>,
    pub(super) priority: Option<i64>,
    pub(super) limits: Option<BTreeMap<String, LimitBody>>,
    pub(super) env: Option<BTreeMap<String, String>>,
    pub(super) workdir: Option<PathBuf>,
    /// A name, uid or uid:gid; unset: the caller's own user (nobody for a root caller).
    pub(super) user: Option<String>,
    /// The budget pools it draws on.
    pub(super) pools: Option<Vec<String>>,
}

/// `POST /v1/adopt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdoptBody {
    pub(super) name: String,
    pub(super) group: String,
    pub(super) pid: u32,
    #[serde(rename = "move", default)]
    pub(super) move_it: bool,
    pub(super) priority: Option<i64>,
    pub(super) limits: Option<BTreeMap<String, LimitBody>>,
    /// The budget pools it draws on.
    pub(super) pools: Option<Vec<String>>,
}

/// `POST /v1/agents/{id}/usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageBody {
    pub(super) resource: String,
    pub(super) value: Value,
}

/// `POST /v1/agents/{id}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AckBody {
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) note: String,
}

/// A quantity given as a number or a string, in `unit`.
pub(super) fn quantity(field: &str, unit: allot_core::Unit, v: &Value) -> Result<u64, ApiError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(ApiError::field(field, "expected a number or a quantity string")),
    };
    allot_core::quantity::parse(field, unit, &text).map(|q| q.value).map_err(|e| ApiError::field(field, e.to_string()))
}

/// A reported count given as a number or a string, in `unit`, with the
/// window it was written with (`"400/h"`); `None` when none was written
/// (a number, `"1.2k"`): then it counts in the window of the limit.
pub(super) fn count(field: &str, unit: allot_core::Unit, v: &Value) -> Result<(u64, Option<allot_core::quantity::Window>), ApiError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(ApiError::field(field, "expected a number or a quantity string")),
    };
    let q = allot_core::quantity::parse(field, unit, &text).map_err(|e| ApiError::field(field, e.to_string()))?;
    Ok((q.value, if text.contains('/') { q.window } else { None }))
}

/// Limits of a request body, in human units, as overrides.
pub(super) fn overrides(limits: BTreeMap<String, LimitBody>) -> Result<BTreeMap<Resource, LimitOverride>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, l) in limits {
        let field = format!("limits.{name}");
        let resource: Resource =
            name.parse().map_err(|e: allot_core::resource::ResourceNameError| ApiError::field(&field, e.to_string()))?;
        let mut o = LimitOverride::default();
        for (key, v, slot) in [("soft", &l.soft, &mut o.soft), ("hard", &l.hard, &mut o.hard), ("burst", &l.burst, &mut o.burst)] {
            if let Some(v) = v {
                // A count keeps the window it was written with (`"50/h"`); all of a limit's in one.
                let f = format!("{field}.{key}");
                let (value, window) = count(&f, resource.unit(), v)?;
                if let Some(w) = window {
                    match o.window {
                        Some(first) if first != w => {
                            return Err(ApiError::field(
                                &f,
                                format!("all values of a limit must use one window; found per {first} and per {w}"),
                            ));
                        }
                        _ => o.window = Some(w),
                    }
                }
                *slot = Some(value);
            }
        }
        if let Some(w) = &l.burst_window {
            let f = format!("{field}.burst_window");
            o.burst_window = Some(allot_core::quantity::parse_duration(&f, w).map_err(|e| ApiError::field(&f, e.to_string()))?);
        }
        if let Some(a) = &l.action {
            o.action = Some(
                a.parse().map_err(|e: allot_core::limits::ActionNameError| ApiError::field(format!("{field}.action"), e.to_string()))?,
            );
        }
        out.insert(resource, o);
    }
    Ok(out)
}

/// The budget pools of a start or adopt body: valid names (as group names),
/// none twice. Whether each exists is the budget ledger's to say, at reserve time.
pub(super) fn pools(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let field = format!("pools[{i}]");
        if !allot_core::group::valid_group_name(name) {
            return Err(ApiError::field(&field, format!("invalid pool name {name:?}: use 1..64 characters from [a-z0-9_], as for groups")));
        }
        if !seen.insert(name) {
            return Err(ApiError::field(&field, format!("pool {name:?} is named twice")));
        }
    }
    Ok(names)
}

/// An agent definition from the common fields of a start or adopt body.
pub(super) fn new_agent(
    name: String,
    group: String,
    priority: Option<i64>,
    limits: Option<BTreeMap<String, LimitBody>>,
    pools: Option<Vec<String>>,
) -> Result<AgentDef, ApiError> {
    let id = AgentId::new(name).map_err(|e| ApiError::field("name", e.to_string()))?;
    let mut spec = AgentSpec::new(id, group);
    if let Some(p) = priority {
        spec.priority = Priority::new(p).map_err(|e| ApiError::field("priority", e.to_string()))?;
    }
    if let Some(limits) = limits {
        spec.overrides = overrides(limits)?;
    }
    if let Some(p) = pools {
        spec.pools = self::pools(p)?;
    }
    Ok(AgentDef {
        spec,
        command: Vec::new(),
        env: BTreeMap::new(),
        workdir: None,
        restart: Restart::Never,
        notify_signal: None,
        user: None,
    })
}

/// A group body in the fleet file's shape, as JSON: `{"extends"?, "description"?,
/// "scaling_policy"?, "limits"?: {...}, "totals"?: {...}}`, validated by the fleet parser
/// (totals on custom resources are budgets: `"5M/day"` or `{"hard": "50M", "calendar": "month", ...}`).
pub(super) fn group(name: &str, body: &Value) -> Result<QuotaGroup, ApiError> {
    let table = toml::Value::try_from(body).map_err(|e| ApiError::field("body", format!("not a group: {e}")))?;
    let mut doc = toml::Table::new();
    doc.insert("groups".into(), toml::Value::Table(toml::Table::from_iter([(name.to_owned(), table)])));
    let text = toml::to_string(&doc).map_err(|e| ApiError::field("body", e.to_string()))?;
    match crate::fleet::parse(&text) {
        Ok(f) => f.groups.into_iter().next().ok_or_else(|| ApiError::field("body", "no group")),
        Err(errs) => {
            let e = &errs[0];
            Err(ApiError::field(e.field.strip_prefix(&format!("groups.{name}.")).unwrap_or(&e.field), e.message.clone()))
        }
    }
}

/// A pool body in the fleet file's shape, as JSON: `{RESOURCE: "50M/day" |
/// {"hard", "soft"?, "per"? | "calendar"?, "day"?, "at"?, "tz"?, "on_expiry"?}}`,
/// validated by the fleet parser.
pub(super) fn pool(name: &str, body: &Value) -> Result<BTreeMap<Resource, allot_core::budget::BudgetSpec>, ApiError> {
    let table = toml::Value::try_from(body).map_err(|e| ApiError::field("body", format!("not a pool: {e}")))?;
    let mut doc = toml::Table::new();
    doc.insert("pools".into(), toml::Value::Table(toml::Table::from_iter([(name.to_owned(), table)])));
    let text = toml::to_string(&doc).map_err(|e| ApiError::field("body", e.to_string()))?;
    match crate::fleet::parse(&text) {
        Ok(mut f) => f.pools.remove(name).ok_or_else(|| ApiError::field("body", "no pool")),
        Err(errs) => {
            let e = &errs[0];
            let field = e.field.strip_prefix(&format!("pools.{name}.")).unwrap_or(&e.field);
            Err(ApiError::field(if field.is_empty() { "body" } else { field }, e.message.clone()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use allot_core::budget::{BudgetSpec, Calendar, Period, WindowSpec};
    use allot_core::quantity::Window;
    use serde_json::json;

    #[test]
    fn a_group_body_takes_budgets_in_its_totals_in_the_short_or_table_form() {
        let body = json!({
            "extends": "standard_agent",
            "totals": {"memory": "2Gi", "tokens": "5M/day", "usd_micros": {"hard": "50M", "calendar": "month", "day": 1, "at": "00:00", "tz": "UTC"}},
        });
        let g = group("llm", &body).unwrap();
        let tokens = Resource::Custom("tokens".into());
        let usd = Resource::Custom("usd_micros".into());
        assert_eq!(g.budgets[&tokens], BudgetSpec::rolling(5_000_000, Window::Day));
        let month = WindowSpec::Calendar(Calendar::parse("x", Period::Month { day: 1 }, "00:00", "UTC").unwrap());
        assert_eq!((g.budgets[&usd].hard, g.budgets[&usd].window), (50_000_000, month));
        assert_eq!(g.totals[&Resource::Memory], 2 << 30);
        assert!(!g.totals.contains_key(&tokens) && !g.totals.contains_key(&usd), "budgets are not kernel totals");
        let e = group("llm", &json!({"totals": {"usd_micros": {"hard": "50M", "calendar": "month", "tz": "Europe/Paris"}}})).unwrap_err();
        let want = "time zone \"Europe/Paris\": IANA zone names are not supported, give the fixed UTC offset in force (accepted forms: UTC, Z, +02:00, -05:30, +0100 (a fixed offset from UTC; IANA names such as Europe/Paris are not supported))";
        assert_eq!(e, ApiError::field("totals.usd_micros.tz", want));
    }

    #[test]
    fn start_and_adopt_bodies_take_the_pools_an_agent_draws_on() {
        let b: StartBody =
            serde_json::from_value(json!({"name": "a", "group": "standard_agent", "command": ["x"], "pools": ["openai", "shared"]}))
                .unwrap();
        let def = new_agent(b.name, b.group, b.priority, b.limits, b.pools).unwrap();
        assert_eq!(def.spec.pools, ["openai", "shared"]);
        let b: AdoptBody = serde_json::from_value(json!({"name": "a", "group": "standard_agent", "pid": 1, "pools": ["p"]})).unwrap();
        assert_eq!(new_agent(b.name, b.group, b.priority, b.limits, b.pools).unwrap().spec.pools, ["p"]);
        let none = new_agent("a".into(), "standard_agent".into(), None, None, None).unwrap();
        assert!(none.spec.pools.is_empty());
        let bad = |pools: &[&str]| {
            new_agent("a".into(), "g".into(), None, None, Some(pools.iter().map(|p| (*p).to_owned()).collect())).unwrap_err()
        };
        assert_eq!(
            bad(&["ok", "Not Valid"]),
            ApiError::field("pools[1]", "invalid pool name \"Not Valid\": use 1..64 characters from [a-z0-9_], as for groups")
        );
        assert_eq!(bad(&["p", "q", "p"]), ApiError::field("pools[2]", "pool \"p\" is named twice"));
        assert!(serde_json::from_value::<StartBody>(json!({"name": "a", "group": "g", "command": ["x"], "pools": "p"})).is_err());
    }
}
