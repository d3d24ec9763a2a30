//! The fleet file: TOML wire format for groups and agents, validated into
//! core types with every error reported at its location.
//!
//! ```toml
//! [groups.gpu_worker]                 # a new group, or changes to a built-in one
//! extends = "heavy_computation_agent" # optional base for a new group
//! description = "GPU workers"
//! scaling_policy = "proportional"     # fixed (default) | proportional
//! limits.memory = { soft = "3Gi", hard = "4Gi", action = "suspend" }
//! totals = { memory = "16Gi", cpu = 8 }
//!
//! [[agents]]
//! name = "indexer-1"
//! group = "standard_agent"
//! command = ["python3", "indexer.py"]
//! priority = 7
//! limits.memory = { soft = "200Mi", hard = "300Mi", action = "throttle" }
//! env = { LOG = "info" }
//! workdir = "/srv/indexer"
//! ```

use allot_core::group::{CustomHandler, QuotaGroup, ScalingPolicy, valid_group_name};
use allot_core::limits::{Action, LimitOverride};
use allot_core::quantity::{self, Quantity, Window};
use allot_core::{AgentId, AgentSpec, Ledger, Priority, Resource};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

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
    /// Run the agent as this user and group (uid, gid) instead of allot's own.
    pub user: Option<(u32, u32)>,
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

/// Governor settings of the `[policy]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The enforcement policy configuration.
    pub policy: allot_core::PolicyConfig,
    /// Sampling interval for memory, cpu and processes (default 1 s).
    pub sample_interval: std::time::Duration,
    /// Every how many samples files, sockets and I/O are read (default 5).
    pub slow_every: u32,
    /// How often analytics run (default 5 min).
    pub analytics_interval: std::time::Duration,
    /// The window analytics look at (default 1 h).
    pub analytics_window: std::time::Duration,
    /// Warn when the hard limit is forecast within this (default 10 min).
    pub forecast_horizon: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: allot_core::PolicyConfig::default(),
            sample_interval: std::time::Duration::from_secs(1),
            slow_every: 5,
            analytics_interval: std::time::Duration::from_secs(300),
            analytics_window: std::time::Duration::from_secs(3600),
            forecast_horizon: std::time::Duration::from_secs(600),
        }
    }
}

/// A parsed and validated fleet.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// Groups defined or changed by the file.
    pub groups: Vec<QuotaGroup>,
    /// The agents, in file order.
    pub agents: Vec<AgentDef>,
    /// The ledger with every group and agent registered: proof that the whole fleet resolves.
    pub ledger: Ledger,
    /// Governor settings.
    pub settings: Settings,
}

/// One problem in a fleet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, such as `agents[1].limits.memory.hard`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
        }
    }
}

struct Ctx<'t> {
    text: &'t str,
    errors: Vec<FleetError>,
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.errors.push(FleetError { line, column, field: field.to_owned(), message: message.into() });
    }

    /// Report keys of `table` not in `known`.
    fn only(&mut self, table: &Table<'_>, field: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            if !known.contains(&k.get_ref().as_ref()) {
                let f = join(field, k.get_ref());
                self.err(k.span(), &f, format!("unknown key; expected one of {}", known.join(", ")));
            }
        }
    }

    fn string(&mut self, v: &Value<'_>, field: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(v.span(), field, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn integer(&mut self, v: &Value<'_>, field: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(v.span(), field, "integer out of range");
                    None
                }
            },
            other => {
                self.err(v.span(), field, format!("expected an integer, found {}", kind(other)));
                None
            }
        }
    }

    fn table<'a, 'i>(&mut self, v: &'a Value<'i>, field: &str) -> Option<&'a Table<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(v.span(), field, format!("expected a table, found {}", kind(other)));
                None
            }
        }
    }

    fn strings(&mut self, v: &Value<'_>, field: &str) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.err(v.span(), field, format!("expected an array of strings, found {}", kind(v.get_ref())));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &format!("{field}[{i}]"))?);
        }
        Some(out)
    }

    /// A quantity for `resource`: a string in human units, or a number read the same way.
    fn quantity(&mut self, v: &Value<'_>, resource: &Resource, field: &str) -> Option<Quantity> {
        let text = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i.to_string(),
            DeValue::Float(f) => f.to_string(),
            other => {
                self.err(v.span(), field, format!("expected a quantity, found {}", kind(other)));
                return None;
            }
        };
        match quantity::parse(field, resource.unit(), &text) {
            Ok(q) => Some(q),
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.strip_prefix(&format!("{field}: ")).unwrap_or(&msg).to_owned();
                self.err(v.span(), field, msg);
                None
            }
        }
    }

    fn duration(&mut self, v: &Value<'_>, field: &str) -> Option<std::time::Duration> {
        let text = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i.to_string(),
            other => {
                self.err(v.span(), field, format!("expected a duration, found {}", kind(other)));
                return None;
            }
        };
        match quantity::parse_duration(field, &text) {
            Ok(d) => Some(d),
            Err(e) => {
                let msg = e.to_string();
                self.err(v.span(), field, msg.strip_prefix(&format!("{field}: ")).unwrap_or(&msg).to_owned());
                None
            }
        }
    }

    fn resource(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, field: &str) -> Option<Resource> {
        match key.get_ref().parse::<Resource>() {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(key.span(), field, e.to_string());
                None
            }
        }
    }

    fn limits(&mut self, v: &Value<'_>, field: &str) -> BTreeMap<Resource, LimitOverride> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, field) else {
            return out;
        };
        for (k, lv) in t.iter() {
            let f = join(field, k.get_ref());
            let Some(resource) = self.resource(k, &f) else {
                continue;
            };
            let Some(lt) = self.table(lv, &f) else {
                continue;
            };
            self.only(lt, &f, &["soft", "hard", "burst", "burst_window", "action"]);
            let mut o = LimitOverride::default();
            let mut windows: Vec<(Window, Range<usize>)> = Vec::new();
            for (name, slot) in [("soft", &mut o.soft), ("hard", &mut o.hard), ("burst", &mut o.burst)] {
                if let Some(qv) = lt.get(name) {
                    if let Some(q) = self.quantity(qv, &resource, &format!("{f}.{name}")) {
                        *slot = Some(q.value);
                        if let Some(w) = q.window {
                            windows.push((w, qv.span()));
                        }
                    }
                }
            }
            if let Some((w, _)) = windows.first() {
                if let Some((other, span)) = windows.iter().find(|(x, _)| x != w) {
                    self.err(span.clone(), &f, format!("all values of a limit must use one window; found per {w} and per {other}"));
                }
                o.window = Some(*w);
            }
            if let Some(d) = lt.get("burst_window") {
                o.burst_window = self.duration(d, &format!("{f}.burst_window"));
            }
            if let Some(a) = lt.get("action") {
                let af = format!("{f}.action");
                if let Some(s) = self.string(a, &af) {
                    match s.parse::<Action>() {
                        Ok(action) => o.action = Some(action),
                        Err(e) => self.err(a.span(), &af, e.to_string()),
                    }
                }
            }
            out.insert(resource, o);
        }
        out
    }

    fn handler(&mut self, v: &Value<'_>, field: &str) -> Option<CustomHandler> {
        let t = self.table(v, field)?;
        self.only(t, field, &["command", "url"]);
        match (t.get("command"), t.get("url")) {
            (Some(c), None) => {
                let cmd = self.strings(c, &format!("{field}.command"))?;
                if cmd.is_empty() {
                    self.err(c.span(), &format!("{field}.command"), "must name a program");
                    return None;
                }
                Some(CustomHandler::Command(cmd))
            }
            (None, Some(u)) => {
                let uf = format!("{field}.url");
                let url = self.string(u, &uf)?;
                if let Err(why) = crate::http::parse_http_url(&url) {
                    self.err(u.span(), &uf, why);
                    return None;
                }
                Some(CustomHandler::Url(url))
            }
            _ => {
                self.err(v.span(), field, "give exactly one of command or url");
                None
            }
        }
    }
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() { key.to_owned() } else { format!("{field}.{key}") }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Parse and validate a fleet file; on failure, every error found, in file order.
pub fn parse(text: &str) -> Result<Fleet, Vec<FleetError>> {
    let mut cx = Ctx { text, errors: Vec::new() };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, "", format!("invalid TOML: {}", e.message()));
            return Err(cx.errors);
        }
    };
    let root = root.get_ref();
    cx.only(root, "", &["groups", "agents", "policy"]);
    let settings = root.get("policy").map(|p| parse_settings(&mut cx, p)).unwrap_or_default();

    let mut ledger = Ledger::with_builtin_groups();
    let mut groups = Vec::new();
    if let Some(gv) = root.get("groups") {
        if let Some(gt) = cx.table(gv, "groups") {
            for (k, v) in gt.iter() {
                let field = format!("groups.{}", k.get_ref());
                if let Some(g) = parse_group(&mut cx, &ledger, k, v, &field) {
                    let result = if ledger.group(&g.name).is_some() { ledger.set_group(g.clone()) } else { ledger.add_group(g.clone()) };
                    match result {
                        Ok(()) => groups.push(g),
                        Err(e) => cx.err(v.span(), &field, e.to_string()),
                    }
                }
            }
        }
    }

    let mut agents = Vec::new();
    match root.get("agents") {
        None => {}
        Some(av) => match av.get_ref() {
            DeValue::Array(items) => {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let field = format!("agents[{i}]");
                    if let DeValue::Table(t) = item.get_ref() {
                        if let Some(n) = t.get("name") {
                            if let DeValue::String(name) = n.get_ref() {
                                if !seen.insert(name.to_string()) {
                                    cx.err(n.span(), &format!("{field}.name"), format!("duplicate agent name {:?}", name.as_ref()));
                                    continue;
                                }
                            }
                        }
                    }
                    if let Some(def) = parse_agent(&mut cx, item, &field) {
                        let Some(group) = ledger.group(&def.spec.group) else {
                            let known: Vec<_> = ledger.groups().map(|g| g.name.clone()).collect();
                            let span = agent_key_span(item, "group");
                            cx.err(
                                span,
                                &format!("{field}.group"),
                                format!("unknown quota group {:?}: known groups are {}", def.spec.group, known.join(", ")),
                            );
                            continue;
                        };
                        if let Err(e) = allot_core::quota::resolve(group, &def.spec, &field) {
                            cx.err(limit_span(item, &e.field), &e.field, e.problem);
                            continue;
                        }
                        match ledger.register(def.spec.clone()) {
                            Ok(_) => agents.push(def),
                            Err(e) => cx.err(item.span(), &field, e.to_string()),
                        }
                    }
                }
            }
            other => cx.err(av.span(), "agents", format!("expected an array of tables ([[agents]]), found {}", kind(other))),
        },
    }
    if cx.errors.is_empty() {
        Ok(Fleet { groups, agents, ledger, settings })
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(cx.errors)
    }
}

fn parse_settings(cx: &mut Ctx<'_>, v: &Value<'_>) -> Settings {
    let mut st = Settings::default();
    let Some(t) = cx.table(v, "policy") else { return st };
    cx.only(
        t,
        "policy",
        &[
            "delays",
            "terminate_grace",
            "scale_down_deadline",
            "recovery_dwell",
            "recovery_stage_interval",
            "sample_interval",
            "slow_every",
            "analytics_interval",
            "analytics_window",
            "forecast_horizon",
        ],
    );
    if let Some(d) = t.get("delays") {
        if let Some(dt) = cx.table(d, "policy.delays") {
            for (k, dv) in dt.iter() {
                let f = format!("policy.delays.{}", k.get_ref());
                match k.get_ref().parse::<Action>() {
                    Ok(action) => {
                        if let Some(dur) = cx.duration(dv, &f) {
                            st.policy.delays.insert(action, dur);
                        }
                    }
                    Err(e) => cx.err(k.span(), &f, e.to_string()),
                }
            }
        }
    }
    let p = &mut st.policy;
    for (key, slot) in [
        ("terminate_grace", &mut p.terminate_grace),
        ("scale_down_deadline", &mut p.scale_down_deadline),
        ("recovery_dwell", &mut p.recovery.dwell),
        ("recovery_stage_interval", &mut p.recovery.stage_interval),
        ("sample_interval", &mut st.sample_interval),
        ("analytics_interval", &mut st.analytics_interval),
        ("analytics_window", &mut st.analytics_window),
        ("forecast_horizon", &mut st.forecast_horizon),
    ] {
        if let Some(dv) = t.get(key) {
            if let Some(d) = cx.duration(dv, &format!("policy.{key}")) {
                *slot = d;
            }
        }
    }
    if st.analytics_interval < std::time::Duration::from_secs(1) {
        cx.err(t.get("analytics_interval").map_or(v.span(), |x| x.span()), "policy.analytics_interval", "must be at least 1s");
    }
    if st.sample_interval < std::time::Duration::from_millis(10) {
        cx.err(t.get("sample_interval").map_or(v.span(), |x| x.span()), "policy.sample_interval", "must be at least 10ms");
    }
    if let Some(n) = t.get("slow_every") {
        if let Some(k) = cx.integer(n, "policy.slow_every") {
            match u32::try_from(k) {
                Ok(k) if (1..=3600).contains(&k) => st.slow_every = k,
                _ => cx.err(n.span(), "policy.slow_every", "use 1..3600"),
            }
        }
    }
    st
}

/// The span of `key`'s value in an agent table, or of the whole agent.
fn agent_key_span(item: &Value<'_>, key: &str) -> Range<usize> {
    match item.get_ref() {
        DeValue::Table(t) => t.get(key).map_or_else(|| item.span(), |v| v.span()),
        _ => item.span(),
    }
}

/// The span of the limit that `field` (`agents[i].limits.R...`) names.
fn limit_span(item: &Value<'_>, field: &str) -> Range<usize> {
    let resource = field.split_once(".limits.").map(|(_, rest)| rest.split('.').next().unwrap_or(rest));
    if let (DeValue::Table(t), Some(r)) = (item.get_ref(), resource) {
        if let Some(limits) = t.get("limits") {
            if let DeValue::Table(lt) = limits.get_ref() {
                if let Some(v) = lt.get(r) {
                    return v.span();
                }
            }
            return limits.span();
        }
    }
    item.span()
}

fn parse_group(
    cx: &mut Ctx<'_>,
    ledger: &Ledger,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    v: &Value<'_>,
    field: &str,
) -> Option<QuotaGroup> {
    let name = key.get_ref().to_string();
    if !valid_group_name(&name) {
        cx.err(key.span(), field, format!("invalid group name {name:?}: use 1..64 characters from [a-z0-9_]"));
        return None;
    }
    let t = cx.table(v, field)?;
    cx.only(t, field, &["extends", "description", "scaling_policy", "limits", "totals", "custom_handler"]);
    let base = match t.get("extends") {
        Some(e) => {
            let base_name = cx.string(e, &format!("{field}.extends"))?;
            match ledger.group(&base_name) {
                Some(b) => Some(b.clone()),
                None => {
                    let known: Vec<_> = ledger.groups().map(|g| g.name.clone()).collect();
                    cx.err(
                        e.span(),
                        &format!("{field}.extends"),
                        format!("unknown group {base_name:?}: known groups are {}", known.join(", ")),
                    );
                    return None;
                }
            }
        }
        None => ledger.group(&name).cloned(),
    };
    let mut g = base.unwrap_or_else(|| QuotaGroup {
        name: name.clone(),
        description: String::new(),
        limits: BTreeMap::new(),
        totals: BTreeMap::new(),
        scaling_policy: ScalingPolicy::Fixed,
        custom_handler: None,
    });
    g.name = name;
    let errors_before = cx.errors.len();
    if let Some(d) = t.get("description") {
        if let Some(s) = cx.string(d, &format!("{field}.description")) {
            g.description = s;
        }
    }
    if let Some(p) = t.get("scaling_policy") {
        let pf = format!("{field}.scaling_policy");
        match cx.string(p, &pf).as_deref() {
            Some("fixed") => g.scaling_policy = ScalingPolicy::Fixed,
            Some("proportional") => g.scaling_policy = ScalingPolicy::Proportional,
            Some(other) => cx.err(p.span(), &pf, format!("unknown scaling policy {other:?}: expected fixed or proportional")),
            None => {}
        }
    }
    if let Some(h) = t.get("custom_handler") {
        g.custom_handler = cx.handler(h, &format!("{field}.custom_handler"));
    }
    if let Some(l) = t.get("limits") {
        let lf = format!("{field}.limits");
        for (resource, o) in cx.limits(l, &lf) {
            let rf = format!("{lf}.{resource}");
            match o.apply(g.limits.get(&resource), &rf) {
                Ok(limit) => {
                    g.limits.insert(resource, limit);
                }
                Err(e) => cx.err(l.span(), &rf, e.problem),
            }
        }
    }
    if let Some(tv) = t.get("totals") {
        let tf = format!("{field}.totals");
        if let Some(tt) = cx.table(tv, &tf) {
            for (k, qv) in tt.iter() {
                let f = join(&tf, k.get_ref());
                if let Some(r) = cx.resource(k, &f) {
                    if let Some(q) = cx.quantity(qv, &r, &f) {
                        g.totals.insert(r, q.value);
                    }
                }
            }
        }
    }
    (cx.errors.len() == errors_before).then_some(g)
}

fn parse_agent(cx: &mut Ctx<'_>, item: &Value<'_>, field: &str) -> Option<AgentDef> {
    let t = cx.table(item, field)?;
    cx.only(
        t,
        field,
        &[
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
        ],
    );
    let errors_before = cx.errors.len();
    let id = match t.get("name") {
        Some(n) => cx.string(n, &format!("{field}.name")).and_then(|s| match AgentId::new(s) {
            Ok(id) => Some(id),
            Err(e) => {
                cx.err(n.span(), &format!("{field}.name"), e.to_string());
                None
            }
        }),
        None => {
            cx.err(item.span(), field, "missing name");
            None
        }
    };
    let group = match t.get("group") {
        Some(g) => cx.string(g, &format!("{field}.group")),
        None => {
            cx.err(
                item.span(),
                field,
                "missing group (one of lightweight_agent, standard_agent, heavy_computation_agent, or a group of [groups])",
            );
            None
        }
    };
    let command = match t.get("command") {
        Some(c) => {
            let cmd = cx.strings(c, &format!("{field}.command"));
            if cmd.as_ref().is_some_and(Vec::is_empty) {
                cx.err(c.span(), &format!("{field}.command"), "must name a program");
            }
            cmd
        }
        None => {
            cx.err(item.span(), field, "missing command (an array: [\"program\", \"arg\", ...])");
            None
        }
    };
    let priority = match t.get("priority") {
        Some(p) => cx.integer(p, &format!("{field}.priority")).and_then(|n| match Priority::new(n) {
            Ok(p) => Some(p),
            Err(e) => {
                cx.err(p.span(), &format!("{field}.priority"), e.to_string());
                None
            }
        }),
        None => Some(Priority::DEFAULT),
    };
    let overrides = t.get("limits").map(|l| cx.limits(l, &format!("{field}.limits"))).unwrap_or_default();
    let mut env = BTreeMap::new();
    if let Some(e) = t.get("env") {
        let ef = format!("{field}.env");
        if let Some(et) = cx.table(e, &ef) {
            for (k, v) in et.iter() {
                let key = k.get_ref().to_string();
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    cx.err(k.span(), &join(&ef, &key), "invalid environment variable name");
                } else if let Some(val) = cx.string(v, &join(&ef, &key)) {
                    env.insert(key, val);
                }
            }
        }
    }
    let workdir = t.get("workdir").and_then(|w| cx.string(w, &format!("{field}.workdir"))).map(PathBuf::from);
    let custom_handler = t.get("custom_handler").and_then(|h| cx.handler(h, &format!("{field}.custom_handler")));
    let max = match t.get("max_restarts") {
        Some(m) => cx.integer(m, &format!("{field}.max_restarts")).and_then(|n| {
            let ok = u32::try_from(n).ok().filter(|n| *n <= 1000);
            if ok.is_none() {
                cx.err(m.span(), &format!("{field}.max_restarts"), "use 0..1000");
            }
            ok
        }),
        None => Some(5),
    };
    let restart = match t.get("restart") {
        Some(r) => match cx.string(r, &format!("{field}.restart")).as_deref() {
            Some("never") => Restart::Never,
            Some("on-failure") => Restart::OnFailure { max: max.unwrap_or(5) },
            Some(other) => {
                cx.err(r.span(), &format!("{field}.restart"), format!("unknown restart policy {other:?}: expected never or on-failure"));
                Restart::Never
            }
            None => Restart::Never,
        },
        None => Restart::Never,
    };
    let notify_signal = match t.get("notify_signal") {
        Some(v) => match cx.string(v, &format!("{field}.notify_signal")).as_deref() {
            Some("SIGUSR1") => Some(10),
            Some("SIGUSR2") => Some(12),
            Some("SIGHUP") => Some(1),
            Some(other) => {
                cx.err(
                    v.span(),
                    &format!("{field}.notify_signal"),
                    format!("unknown signal {other:?}: expected SIGUSR1, SIGUSR2 or SIGHUP"),
                );
                None
            }
            None => None,
        },
        None => None,
    };
    let user = match t.get("user") {
        Some(u) => {
            let f = format!("{field}.user");
            cx.string(u, &f).and_then(|name| match resolve_user(&name, &std::fs::read_to_string("/etc/passwd").unwrap_or_default()) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    cx.err(u.span(), &f, e);
                    None
                }
            })
        }
        None => None,
    };
    if cx.errors.len() != errors_before {
        return None;
    }
    let mut spec = AgentSpec::new(id?, group?);
    spec.priority = priority?;
    spec.overrides = overrides;
    spec.custom_handler = custom_handler;
    Some(AgentDef { spec, command: command?, env, workdir, restart, notify_signal, user })
}
