//! Request bodies (wire types, unknown fields refused) and their checked
//! conversion into core types; every error names the field. Each body type
//! derives its JSON Schema, which the OpenAPI document publishes (`openapi`);
//! the group and pool bodies are read by the fleet parser, and their schemas
//! (`GroupBody`, `PoolBody`, `BudgetTable`, `HandlerBody`) are written next
//! to it here, held to the parser's keys by a test.

use super::error::ApiError;
use super::openapi::{Budget, Quantity, Total};
use crate::fleet::{AgentDef, Restart};
use allot_core::limits::LimitOverride;
use allot_core::{AgentId, AgentSpec, Priority, QuotaGroup, Resource};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One resource's limits in a body; quantities as numbers or strings (`"300Mi"`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitBody {
    /// Above it, the limit's action.
    #[schemars(with = "Option<Quantity>")]
    soft: Option<Value>,
    /// The kernel's ceiling.
    #[schemars(with = "Option<Quantity>")]
    hard: Option<Value>,
    /// Allowed above hard for at most burst_window.
    #[schemars(with = "Option<Quantity>")]
    burst: Option<Value>,
    /// How long a burst may last (`"30s"`).
    burst_window: Option<String>,
    /// warn, throttle, scale_down, suspend, migrate, terminate or custom.
    action: Option<String>,
}

/// `PATCH /v1/agents/{id}/quota`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaBody {
    /// Limits by resource, merged over the agent's.
    pub(super) limits: BTreeMap<String, LimitBody>,
}

/// `POST /v1/agents`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartBody {
    /// The agent's id.
    pub(super) name: String,
    /// Its quota group.
    pub(super) group: String,
    /// The program and its arguments.
    pub(super) command: Vec<String>,
    /// Its priority (higher is spared longer).
    pub(super) priority: Option<i64>,
    /// Limits by resource, over the group's.
    pub(super) limits: Option<BTreeMap<String, LimitBody>>,
    /// Environment variables.
    pub(super) env: Option<BTreeMap<String, String>>,
    /// The working directory.
    pub(super) workdir: Option<PathBuf>,
    /// A name, uid or uid:gid; unset: the caller's own user (nobody for a root caller).
    pub(super) user: Option<String>,
    /// The budget pools it draws on.
    pub(super) pools: Option<Vec<String>>,
}

/// `POST /v1/adopt`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdoptBody {
    /// The agent's id.
    pub(super) name: String,
    /// Its quota group.
    pub(super) group: String,
    /// The running process to adopt.
    pub(super) pid: u32,
    /// Move it into the agent's cgroup (only when asked).
    #[serde(rename = "move", default)]
    pub(super) move_it: bool,
    /// Its priority (higher is spared longer).
    pub(super) priority: Option<i64>,
    /// Limits by resource, over the group's.
    pub(super) limits: Option<BTreeMap<String, LimitBody>>,
    /// The budget pools it draws on.
    pub(super) pools: Option<Vec<String>>,
}

/// `POST /v1/agents/{id}/usage`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageBody {
    /// A custom resource (tokens, usd_micros, ...).
    pub(super) resource: String,
    /// The amount used: a number or a quantity string (`"1.2k"`, or with its window, `"400/h"`).
    #[schemars(with = "Quantity")]
    pub(super) value: Value,
}

/// `POST /v1/agents/{id}/ack`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckBody {
    /// The sequence number of the request acknowledged.
    pub(super) seq: u64,
    /// A note recorded with it.
    #[serde(default)]
    pub(super) note: String,
}

/// The text of a quantity given as a number or a string. A JSON number
/// beyond what a quantity holds (written with an exponent, `1.8e19`) is
/// refused as out of range rather than read as a unit.
fn quantity_text(field: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Value::Number(n) => {
            let text = n.to_string();
            if text.contains(['e', 'E']) {
                return Err(ApiError::field(field, format!("{n} is out of range: a quantity is at most {}", u64::MAX)));
            }
            Ok(text)
        }
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::field(field, "expected a number or a quantity string")),
    }
}

/// A quantity given as a number or a string, in `unit`.
pub(super) fn quantity(field: &str, unit: allot_core::Unit, v: &Value) -> Result<u64, ApiError> {
    let text = quantity_text(field, v)?;
    allot_core::quantity::parse(field, unit, &text).map(|q| q.value).map_err(|e| ApiError::field(field, e.to_string()))
}

/// A reported count given as a number or a string, in `unit`, with the
/// window it was written with (`"400/h"`); `None` when none was written
/// (a number, `"1.2k"`): then it counts in the window of the limit.
pub(super) fn count(field: &str, unit: allot_core::Unit, v: &Value) -> Result<(u64, Option<allot_core::quantity::Window>), ApiError> {
    let text = quantity_text(field, v)?;
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
        restartable: false,
    })
}

/// A group: the fleet file's group table.
// A schema only: [`group`] hands the body to the fleet parser; a test holds
// these fields to the keys the parser takes.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema only: the fleet parser reads the body")]
pub(super) struct GroupBody {
    /// The group it starts from (else the built-in group of that name, or nothing).
    extends: Option<String>,
    /// What it is for.
    description: Option<String>,
    /// fixed or proportional.
    scaling_policy: Option<String>,
    /// Limits by resource, over those it extends.
    limits: Option<BTreeMap<String, LimitBody>>,
    /// Ceilings over all its agents by resource; on a custom resource, a budget.
    totals: Option<BTreeMap<String, Total>>,
    /// The handler of the custom action.
    custom_handler: Option<HandlerBody>,
}

/// A custom action's handler: exactly one of `command` or `url`.
// A schema only: the fleet parser reads it.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema only: the fleet parser reads the body")]
pub(super) struct HandlerBody {
    /// A program and its arguments.
    command: Option<Vec<String>>,
    /// An `http://` URL it is posted to.
    url: Option<String>,
}

/// A budget's table form (short form: `"5M/day"`).
// A schema only: the fleet parser reads budgets.
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema only: the fleet parser reads the body")]
pub(super) struct BudgetTable {
    /// The limit over the window.
    #[schemars(with = "Quantity")]
    hard: Value,
    /// Above it, a warning.
    #[schemars(with = "Option<Quantity>")]
    soft: Option<Value>,
    /// A rolling window: s, min, h or day (not with calendar).
    per: Option<String>,
    /// A calendar window: day or month (not with per).
    calendar: Option<String>,
    /// The day of the month a monthly window starts.
    #[schemars(range(min = 1, max = 28))]
    day: Option<u8>,
    /// The time of day it starts, `"HH:MM"`.
    at: Option<String>,
    /// A fixed offset from UTC: `"UTC"`, `"+02:00"`.
    tz: Option<String>,
    /// What an unsettled reservation's expiry does: charge (the default) or release.
    on_expiry: Option<String>,
}

/// The schema of a pool body (`PUT /v1/pools/{name}`): budgets by custom
/// resource, which [`pool`] hands to the fleet parser (a test holds
/// [`BudgetTable`] to the keys it takes).
#[derive(Debug)]
pub(super) enum PoolBody {}

impl JsonSchema for PoolBody {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PoolBody".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "Budgets by custom resource (tokens, usd_micros, ...), replacing the pool's whole",
            "minProperties": 1,
            "additionalProperties": g.subschema_for::<Budget>(),
        })
    }
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

    /// The property names of `T`'s schema.
    fn properties<T: JsonSchema>() -> Vec<String> {
        let s = schemars::generate::SchemaSettings::openapi3().into_generator().root_schema_for::<T>();
        let mut names: Vec<String> = s.get("properties").and_then(Value::as_object).unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    /// The keys the fleet parser takes where `e` refused one ("unknown key; expected one of a, b").
    fn parser_keys(e: &ApiError) -> Vec<String> {
        let text = format!("{e:?}");
        let list = text.split("expected one of ").nth(1).unwrap_or_else(|| panic!("not an unknown key: {text}"));
        let mut keys: Vec<String> = list.split('"').next().unwrap().split(", ").map(str::to_owned).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_group_and_pool_schemas_are_the_keys_the_fleet_parser_takes() {
        let e = group("g", &json!({"bogus_key": 1})).unwrap_err();
        assert_eq!(parser_keys(&e), properties::<GroupBody>(), "a group: {e:?}");
        let e = group("g", &json!({"extends": "standard_agent", "limits": {"memory": {"bogus_key": 1}}})).unwrap_err();
        assert_eq!(parser_keys(&e), properties::<LimitBody>(), "a group's limit: {e:?}");
        let e = group("g", &json!({"custom_handler": {"bogus_key": 1, "url": "http://127.0.0.1:9/"}})).unwrap_err();
        assert_eq!(parser_keys(&e), properties::<HandlerBody>(), "a custom handler: {e:?}");
        let e = pool("p", &json!({"tokens": {"hard": 1, "bogus_key": 1}})).unwrap_err();
        assert_eq!(parser_keys(&e), properties::<BudgetTable>(), "a pool's budget: {e:?}");
        let e = group("g", &json!({"totals": {"tokens": {"hard": 1, "bogus_key": 1}}})).unwrap_err();
        assert_eq!(parser_keys(&e), properties::<BudgetTable>(), "a group's budget: {e:?}");
        // Every one of them taken at once (a rolling and a calendar budget: per and calendar exclude each other).
        let limit = json!({"soft": "100Mi", "hard": "200Mi", "burst": "250Mi", "burst_window": "10s", "action": "throttle"});
        let rolling = json!({"hard": "1k", "soft": 500, "per": "h", "on_expiry": "release"});
        let calendar =
            json!({"hard": 1000, "soft": "500", "calendar": "month", "day": 1, "at": "00:00", "tz": "UTC", "on_expiry": "charge"});
        let g = group(
            "g",
            &json!({
                "extends": "standard_agent", "description": "d", "scaling_policy": "proportional", "limits": {"memory": limit},
                "totals": {"memory": "1Gi", "tokens": rolling, "usd_micros": calendar}, "custom_handler": {"command": ["true"]},
            }),
        )
        .unwrap();
        assert_eq!((g.budgets.len(), g.description.as_str()), (2, "d"));
        assert!(group("g", &json!({"custom_handler": {"url": "http://127.0.0.1:9/"}})).is_ok());
        assert_eq!(pool("p", &json!({"tokens": rolling, "usd_micros": calendar, "requests": "10/min"})).unwrap().len(), 3);
    }
}
