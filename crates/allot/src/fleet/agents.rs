//! `[[agents]]`: each agent's identity, group, command, limits and run-time
//! options (environment, working directory, restart policy, notify signal,
//! user, the budget pools it draws on), checked against its group and
//! registered in the ledger.

use super::budgets::PoolBudgets;
use super::context::{Ctx, Table, Value, join, key_span};
use super::groups::{NO_HANDLER, known_groups};
use allot_core::{AgentId, AgentSpec, Ledger, Priority};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use toml::de::DeValue;

/// What to do when an agent exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Leave it exited.
    Never,
    /// Restart after a non-zero exit, with exponential backoff (1 s doubling to
    /// 30 s), at most `max` times.
    OnFailure {
        /// Most restarts.
        max: u32,
    },
}

/// An agent as the fleet file defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentDef {
    /// Identity, group, priority and limit overrides.
    pub spec: AgentSpec,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// The working directory.
    pub workdir: Option<PathBuf>,
    /// Restart policy.
    pub restart: Restart,
    /// Signal sent to the agent after each new message in its channel file (none by default).
    pub notify_signal: Option<i32>,
    /// Run the agent as this user and group (uid, gid). Unset: the caller's
    /// own user, and for a root caller `nobody` (root only when asked for by name).
    pub user: Option<(u32, u32)>,
    /// In cluster mode, a `migrate` action stops it here and starts it on
    /// the node with the most headroom (`restartable = true`); else migrate suspends.
    pub restartable: bool,
}

/// Resolve `name`, `uid` or `uid:gid` to (uid, gid) through `passwd` text.
pub fn resolve_user(spec: &str, passwd: &str) -> Result<(u32, u32), String> {
    if let Some((u, g)) = spec.split_once(':') {
        return match (u.parse(), g.parse()) {
            (Ok(u), Ok(g)) => Ok((u, g)),
            _ => Err(format!("{spec:?} is not uid:gid")),
        };
    }
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && (f[0] == spec || f[2] == spec) {
            if let (Ok(u), Ok(g)) = (f[2].parse(), f[3].parse()) {
                return Ok((u, g));
            }
        }
    }
    match spec.parse::<u32>() {
        Ok(u) => Ok((u, u)),
        Err(_) => Err(format!("unknown user {spec:?} (not in /etc/passwd)")),
    }
}

/// The user an agent runs as when none is given: the caller's own uid (and
/// its primary group), or `nobody` when the caller is root: an agent runs as
/// root only when root is asked for by name.
pub fn default_user(caller_uid: u32, passwd: &str) -> (u32, u32) {
    let entry = |pred: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && pred(f))
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
    };
    if caller_uid != 0 {
        let uid = caller_uid.to_string();
        return entry(&|f| f[2] == uid).unwrap_or((caller_uid, caller_uid));
    }
    entry(&|f| f[0] == "nobody").unwrap_or((NOBODY, NOBODY))
}

/// The conventional uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

const KEYS: &[&str] = &[
    "name",
    "group",
    "command",
    "priority",
    "limits",
    "env",
    "workdir",
    "custom_handler",
    "restart",
    "max_restarts",
    "notify_signal",
    "user",
    "pools",
    "restartable",
];

const MISSING_GROUP: &str = "missing group (one of lightweight_agent, standard_agent, heavy_computation_agent, or a group of [groups])";

const MISSING_COMMAND: &str = "missing command (an array: [\"program\", \"arg\", ...])";

/// Restarts allowed by `restart = "on-failure"` without `max_restarts`.
const DEFAULT_MAX_RESTARTS: u32 = 5;

/// The signals `notify_signal` may name, with their numbers.
const SIGNALS: [(&str, i32); 3] = [("SIGUSR1", 10), ("SIGUSR2", 12), ("SIGHUP", 1)];

/// The `agents` array `av`: each valid agent is registered in `ledger` and returned.
/// `pools` are the file's declared pools, which an agent's `pools` must name.
pub(super) fn parse_agents(cx: &mut Ctx<'_>, av: &Value<'_>, ledger: &mut Ledger, pools: &BTreeMap<String, PoolBudgets>) -> Vec<AgentDef> {
    let mut agents = Vec::new();
    let DeValue::Array(items) = av.get_ref() else {
        cx.expected(av, "agents", "an array of tables ([[agents]])");
        return agents;
    };
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("agents[{i}]");
        if is_duplicate(cx, item, &field, &mut seen) {
            continue;
        }
        if let Some(def) = parse_agent(cx, item, &field, ledger, pools) {
            if cx.check(item.span(), &field, ledger.register(def.spec.clone())).is_some() {
                agents.push(def);
            }
        }
    }
    agents
}

/// Whether agent `item` has a name taken by an earlier agent (reported); a new name is added to `seen`.
fn is_duplicate(cx: &mut Ctx<'_>, item: &Value<'_>, field: &str, seen: &mut BTreeSet<String>) -> bool {
    let DeValue::Table(t) = item.get_ref() else { return false };
    let Some(n) = t.get("name") else { return false };
    let DeValue::String(name) = n.get_ref() else { return false };
    if seen.insert(name.to_string()) {
        return false;
    }
    cx.err(n.span(), &format!("{field}.name"), format!("duplicate agent name {:?}", name.as_ref()));
    true
}

/// Check an agent's group and each of its limits against the group's
/// defaults, reporting every problem at the key that is wrong (not only the
/// first): an unknown group, a limit whose merge breaks soft <= hard <= burst,
/// a custom action without a handler.
fn check_limits(cx: &mut Ctx<'_>, ledger: &Ledger, item: &Value<'_>, field: &str, group: &str, spec: &PartialSpec<'_>) {
    let Some(g) = ledger.group(group) else {
        let message = format!("unknown quota group {group:?}: known groups are {}", known_groups(ledger));
        cx.err(agent_key_span(item, "group"), &format!("{field}.group"), message);
        return;
    };
    let has_handler = spec.custom_handler.is_some() || g.custom_handler.is_some();
    for (resource, o) in spec.overrides {
        let f = format!("{field}.limits.{resource}");
        let span = limit_span(item, &f);
        match o.apply(g.limits.get(resource), &f) {
            Ok(l) if l.action == allot_core::Action::Custom && !has_handler => cx.err(span, &format!("{f}.action"), NO_HANDLER),
            Ok(_) => {}
            Err(e) => cx.err(span, &e.field, e.problem),
        }
    }
}

/// What [`check_limits`] needs of an agent that may not have parsed in full.
struct PartialSpec<'a> {
    overrides: &'a BTreeMap<allot_core::Resource, allot_core::limits::LimitOverride>,
    custom_handler: &'a Option<allot_core::group::CustomHandler>,
}

/// The span of `key`'s value in an agent table, or of the whole agent.
fn agent_key_span(item: &Value<'_>, key: &str) -> Range<usize> {
    key_span(item, key)
}

/// The span of the limit that `field` (`agents[i].limits.R...`) names.
fn limit_span(item: &Value<'_>, field: &str) -> Range<usize> {
    let resource = field.split_once(".limits.").map(|(_, rest)| rest.split('.').next().unwrap_or(rest));
    if let (DeValue::Table(t), Some(r)) = (item.get_ref(), resource) {
        if let Some(limits) = t.get("limits") {
            return key_span(limits, r);
        }
    }
    item.span()
}

/// One agent table; `None` when anything in it is wrong (every problem reported).
fn parse_agent(
    cx: &mut Ctx<'_>,
    item: &Value<'_>,
    field: &str,
    ledger: &Ledger,
    pools: &BTreeMap<String, PoolBudgets>,
) -> Option<AgentDef> {
    let t = cx.table(item, field)?;
    cx.only(t, field, KEYS);
    let errors_before = cx.errors.len();
    let id = required(cx, t, item, field, "name", "missing name").and_then(|n| {
        let f = format!("{field}.name");
        cx.string(n, &f).and_then(|s| cx.check(n.span(), &f, AgentId::new(s)))
    });
    let group = required(cx, t, item, field, "group", MISSING_GROUP).and_then(|g| cx.string(g, &format!("{field}.group")));
    let command = required(cx, t, item, field, "command", MISSING_COMMAND).and_then(|c| command(cx, c, field));
    let priority = match t.get("priority") {
        Some(p) => {
            let f = format!("{field}.priority");
            cx.integer(p, &f).and_then(|n| cx.check(p.span(), &f, Priority::new(n)))
        }
        None => Some(Priority::DEFAULT),
    };
    let overrides = t.get("limits").map(|l| cx.limits(l, &format!("{field}.limits"))).unwrap_or_default();
    let env = t.get("env").map(|e| env(cx, e, field)).unwrap_or_default();
    let workdir = t.get("workdir").and_then(|w| cx.string(w, &format!("{field}.workdir"))).map(PathBuf::from);
    let custom_handler = t.get("custom_handler").and_then(|h| cx.handler(h, &format!("{field}.custom_handler")));
    let restart = restart(cx, t, field);
    let notify_signal = t.get("notify_signal").and_then(|v| cx.choice(v, &format!("{field}.notify_signal"), "signal", &SIGNALS));
    let user = t.get("user").and_then(|u| user(cx, u, field));
    let restartable = t.get("restartable").and_then(|r| cx.boolean(r, &format!("{field}.restartable"))).unwrap_or(false);
    let agent_pools = t.get("pools").and_then(|p| cx.pool_names(p, &format!("{field}.pools"), pools)).unwrap_or_default();
    if let Some(g) = &group {
        check_limits(cx, ledger, item, field, g, &PartialSpec { overrides: &overrides, custom_handler: &custom_handler });
    }
    if cx.errors.len() != errors_before {
        return None;
    }
    let mut spec = AgentSpec::new(id?, group?);
    spec.priority = priority?;
    spec.overrides = overrides;
    spec.custom_handler = custom_handler;
    spec.pools = agent_pools;
    Some(AgentDef { spec, command: command?, env, workdir, restart, notify_signal, user, restartable })
}

/// The value of the agent's required `key`; when it is absent, `missing` is reported at the agent.
fn required<'a, 'i>(cx: &mut Ctx<'_>, t: &'a Table<'i>, item: &Value<'_>, field: &str, key: &str, missing: &str) -> Option<&'a Value<'i>> {
    let v = t.get(key);
    if v.is_none() {
        cx.err(item.span(), field, missing);
    }
    v
}

/// `command`: a program and its arguments.
fn command(cx: &mut Ctx<'_>, c: &Value<'_>, field: &str) -> Option<Vec<String>> {
    let f = format!("{field}.command");
    let cmd = cx.strings(c, &f)?;
    if cmd.is_empty() {
        cx.err(c.span(), &f, "must name a program");
        return None;
    }
    Some(cmd)
}

/// `env`: variable names and their string values.
fn env(cx: &mut Ctx<'_>, e: &Value<'_>, field: &str) -> BTreeMap<String, String> {
    let ef = format!("{field}.env");
    let mut env = BTreeMap::new();
    let Some(et) = cx.table(e, &ef) else { return env };
    for (k, v) in et.iter() {
        let key = k.get_ref().to_string();
        let kf = join(&ef, &key);
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            cx.err(k.span(), &kf, "invalid environment variable name");
        } else if let Some(val) = cx.string(v, &kf) {
            env.insert(key, val);
        }
    }
    env
}

/// `restart` and `max_restarts` (never, unless `restart = "on-failure"`).
fn restart(cx: &mut Ctx<'_>, t: &Table<'_>, field: &str) -> Restart {
    let max = t.get("max_restarts").and_then(|m| {
        let f = format!("{field}.max_restarts");
        let in_range = |n: i64| u32::try_from(n).ok().filter(|n| *n <= 1000).ok_or("use 0..1000");
        cx.integer(m, &f).and_then(|n| cx.check(m.span(), &f, in_range(n)))
    });
    let policies = [("never", Restart::Never), ("on-failure", Restart::OnFailure { max: max.unwrap_or(DEFAULT_MAX_RESTARTS) })];
    t.get("restart").and_then(|r| cx.choice(r, &format!("{field}.restart"), "restart policy", &policies)).unwrap_or(Restart::Never)
}

/// `user`: a name, uid or uid:gid from /etc/passwd.
fn user(cx: &mut Ctx<'_>, u: &Value<'_>, field: &str) -> Option<(u32, u32)> {
    let f = format!("{field}.user");
    let name = cx.string(u, &f)?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    cx.check(u.span(), &f, resolve_user(&name, &passwd))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n";

    #[test]
    fn root_callers_get_nobody_and_others_themselves() {
        assert_eq!(default_user(0, PASSWD), (65534, 65533), "root only by name");
        assert_eq!(default_user(0, ""), (NOBODY, NOBODY));
        assert_eq!(default_user(1000, PASSWD), (1000, 100));
        assert_eq!(default_user(4242, PASSWD), (4242, 4242));
        assert_eq!(resolve_user("root", PASSWD), Ok((0, 0)), "root by name");
    }
}
