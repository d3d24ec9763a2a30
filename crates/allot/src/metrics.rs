//! Prometheus metrics of the daemon (prometheus-client): typed families in
//! one registry, kept up to date by the governor loop as it samples, acts
//! and records, and encoded by `GET /metrics` without asking the loop or
//! reading the store.
//!
//! Families: `allot_agent_usage{agent,resource,unit}`,
//! `allot_agent_limit{agent,resource,kind}`, `allot_agent_up{agent,group,state}`,
//! `allot_group_usage{group,resource}`, `allot_group_total{group,resource}`,
//! `allot_events_total`, `allot_enforcement_total{agent,action,outcome}`
//! (seeded from the store at start, so it counts since the database was
//! created), `allot_governor_ticks_total`, `allot_governor_last_tick_seconds`,
//! `allot_governor_tick_seconds_total`, `allot_api_connections_open`,
//! `allot_api_connections_refused_total{listener,reason}`,
//! `allot_api_subscribers_refused_total`, `allot_metric_series_dropped_total`.
//!
//! The exposition is bounded: at most [`MAX_CUSTOM_RESOURCES`] distinct
//! custom resource names appear in labels (those exported first keep their
//! place while in use); series of other custom names are not exported and
//! are counted in `allot_metric_series_dropped_total` at each refresh.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// At most this many distinct custom resource names are exported.
pub const MAX_CUSTOM_RESOURCES: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    agent: String,
    resource: String,
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    agent: String,
    resource: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpLabels {
    agent: String,
    group: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnforcementLabels {
    agent: String,
    action: String,
    outcome: String,
}

/// One agent as the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSnapshot {
    /// Its group.
    pub group: String,
    /// Its state name.
    pub state: String,
    /// Latest usage per resource (name, unit, value).
    pub usage: Vec<(String, String, u64)>,
    /// Limits per resource (name, soft, hard, burst).
    pub limits: Vec<(String, u64, u64, u64)>,
}

/// One group's summed usage and its totals, by resource name.
pub type GroupFigures = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// The label sets last written, so that those of exited agents and old states are removed.
#[derive(Debug, Default)]
struct Written {
    agents: BTreeMap<String, AgentSnapshot>,
    groups: BTreeMap<String, Vec<String>>,
    /// The custom resource names exported (at most [`MAX_CUSTOM_RESOURCES`]).
    custom: std::collections::BTreeSet<String>,
    /// Whether dropping series has been logged.
    warned: bool,
}

fn is_custom(resource: &str) -> bool {
    resource.parse::<allot_core::Resource>().map_or(true, |r| r.is_custom())
}

impl Written {
    /// Whether series of `resource` are exported; counts what is not.
    fn exported(&mut self, resource: &str, dropped: &Counter) -> bool {
        if !is_custom(resource) || self.custom.contains(resource) {
            return true;
        }
        if self.custom.len() < MAX_CUSTOM_RESOURCES {
            self.custom.insert(resource.to_owned());
            return true;
        }
        dropped.inc();
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                resource,
                max = MAX_CUSTOM_RESOURCES,
                "more custom resource names than /metrics exports: their series are dropped (counted in allot_metric_series_dropped_total; logged once)"
            );
        }
        false
    }
}

/// Every metric family and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    usage: Family<UsageLabels, Gauge>,
    limit: Family<LimitLabels, Gauge>,
    up: Family<UpLabels, Gauge>,
    group_usage: Family<GroupLabels, Gauge>,
    group_total: Family<GroupLabels, Gauge>,
    events: Counter,
    unrecorded: Counter,
    enforcement: Family<EnforcementLabels, Counter>,
    ticks: Counter,
    last_tick: Gauge<f64, AtomicU64>,
    tick_seconds: Counter<f64, AtomicU64>,
    connections_open: Gauge,
    connections_refused: Family<RefusedLabels, Counter>,
    subscribers_refused: Counter,
    series_dropped: Counter,
    written: Mutex<Written>,
    /// The sequence number of the last event stored: event streams wait on
    /// it (pushed as the governor stores an event, no polling).
    stored: tokio::sync::watch::Sender<u64>,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty families, registered.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            usage: Family::default(),
            limit: Family::default(),
            up: Family::default(),
            group_usage: Family::default(),
            group_total: Family::default(),
            events: Counter::default(),
            unrecorded: Counter::default(),
            enforcement: Family::default(),
            ticks: Counter::default(),
            last_tick: Gauge::default(),
            tick_seconds: Counter::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            subscribers_refused: Counter::default(),
            series_dropped: Counter::default(),
            written: Mutex::new(Written::default()),
            stored: tokio::sync::watch::Sender::new(0),
        };
        let r = &mut m.registry;
        r.register("allot_agent_usage", "Latest measured usage of an agent, in the resource's internal unit", m.usage.clone());
        r.register("allot_agent_limit", "An agent's limit, in the resource's internal unit", m.limit.clone());
        r.register("allot_agent_up", "Whether the agent runs (1) or has exited (0), by state", m.up.clone());
        r.register("allot_group_usage", "Summed usage of a group's members, in the resource's internal unit", m.group_usage.clone());
        r.register("allot_group_total", "A group's total limit, in the resource's internal unit", m.group_total.clone());
        r.register("allot_events", "Events published since the state database was created", m.events.clone());
        r.register(
            "allot_unrecorded",
            "Events, records and agent changes the state store could not record (a full disk, say) since the daemon started",
            m.unrecorded.clone(),
        );
        r.register(
            "allot_enforcement",
            "Enforcement attempts by agent, action and real outcome (warn counts violations)",
            m.enforcement.clone(),
        );
        r.register("allot_governor_ticks", "Sampling ticks of the governor loop", m.ticks.clone());
        r.register("allot_governor_last_tick_seconds", "Time the last tick spent sampling every agent", m.last_tick.clone());
        r.register("allot_governor_tick_seconds", "Time spent sampling since start", m.tick_seconds.clone());
        r.register("allot_api_connections_open", "Open API connections", m.connections_open.clone());
        r.register(
            "allot_api_connections_refused",
            "API connections refused and closed at once, by listener and the cap that refused them",
            m.connections_refused.clone(),
        );
        r.register(
            "allot_api_subscribers_refused",
            "Server-sent-event subscriptions refused (503) over the subscriber cap",
            m.subscribers_refused.clone(),
        );
        r.register(
            "allot_metric_series_dropped",
            "Series not exported (custom resource names beyond the cap), counted at each refresh",
            m.series_dropped.clone(),
        );
        m
    }

    /// Start the counters where the store says they stand.
    pub fn seed(&self, store: &allot_store::Store) {
        self.events.inc_by(store.last_seq().unwrap_or(0));
        for (agent, action, outcome, n) in store.enforcement_counts().unwrap_or_default() {
            self.enforcement.get_or_create(&EnforcementLabels { agent, action, outcome: outcome.as_str().to_owned() }).inc_by(n);
        }
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// One event published.
    pub fn event(&self) {
        self.events.inc();
    }

    /// An event stored under `seq`: every event stream waiting wakes up.
    pub fn event_stored(&self, seq: u64) {
        self.stored.send_replace(seq);
    }

    /// Wakes up as events are stored (the last one's sequence number).
    pub fn stored_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// A write the state store refused.
    pub fn unrecorded(&self) {
        self.unrecorded.inc();
    }

    /// One enforcement attempt recorded.
    pub fn enforcement(&self, agent: &str, action: &str, outcome: allot_store::Outcome) {
        let labels = EnforcementLabels { agent: agent.to_owned(), action: action.to_owned(), outcome: outcome.as_str().to_owned() };
        self.enforcement.get_or_create(&labels).inc();
    }

    /// One sampling tick took `secs`.
    pub fn tick(&self, secs: f64) {
        self.ticks.inc();
        self.last_tick.set(secs);
        self.tick_seconds.inc_by(secs);
    }

    /// An API connection was admitted.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// An admitted API connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// An API connection was refused over a cap (`reason`: total, shared, per_peer).
    pub fn connection_refused(&self, listener: &str, reason: &str) {
        self.connections_refused.get_or_create(&RefusedLabels { listener: listener.to_owned(), reason: reason.to_owned() }).inc();
    }

    /// A server-sent-event subscription was refused over the cap.
    pub fn subscriber_refused(&self) {
        self.subscribers_refused.inc();
    }

    /// Write every agent's gauges and remove those of agents and states no longer there.
    pub fn agents(&self, now: BTreeMap<String, AgentSnapshot>) {
        let Ok(mut written) = self.written.lock() else { return };
        for (id, old) in &written.agents {
            let new = now.get(id);
            if new.is_none_or(|n| n.state != old.state || n.group != old.group) {
                self.up.remove(&UpLabels { agent: id.clone(), group: old.group.clone(), state: old.state.clone() });
            }
            for (res, unit, _) in &old.usage {
                if new.is_none_or(|n| !n.usage.iter().any(|(r, u, _)| r == res && u == unit)) {
                    self.usage.remove(&UsageLabels { agent: id.clone(), resource: res.clone(), unit: unit.clone() });
                }
            }
            for (res, ..) in &old.limits {
                if new.is_none_or(|n| !n.limits.iter().any(|(r, ..)| r == res)) {
                    for kind in ["soft", "hard", "burst"] {
                        self.limit.remove(&LimitLabels { agent: id.clone(), resource: res.clone(), kind: kind.into() });
                    }
                }
            }
        }
        // The custom names still in use keep their place; new ones fill what is left.
        let in_use: std::collections::BTreeSet<&str> =
            now.values().flat_map(|a| a.usage.iter().map(|(r, ..)| r.as_str()).chain(a.limits.iter().map(|(r, ..)| r.as_str()))).collect();
        written.custom.retain(|r| in_use.contains(r.as_str()));
        for (id, a) in &now {
            let up = UpLabels { agent: id.clone(), group: a.group.clone(), state: a.state.clone() };
            self.up.get_or_create(&up).set(i64::from(a.state != "exited"));
            for (res, unit, v) in &a.usage {
                if !written.exported(res, &self.series_dropped) {
                    continue;
                }
                let l = UsageLabels { agent: id.clone(), resource: res.clone(), unit: unit.clone() };
                self.usage.get_or_create(&l).set(gauge_value(*v));
            }
            for (res, soft, hard, burst) in &a.limits {
                if !written.exported(res, &self.series_dropped) {
                    continue;
                }
                for (kind, v) in [("soft", soft), ("hard", hard), ("burst", burst)] {
                    let l = LimitLabels { agent: id.clone(), resource: res.clone(), kind: kind.into() };
                    self.limit.get_or_create(&l).set(gauge_value(*v));
                }
            }
        }
        written.agents = now;
    }

    /// Write every group's usage and totals (resource name to value).
    pub fn groups(&self, now: BTreeMap<String, GroupFigures>) {
        let Ok(mut written) = self.written.lock() else { return };
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, (usage, totals)) in &now {
            let mut exported = Vec::new();
            for (r, v) in usage {
                if !written.exported(r, &self.series_dropped) {
                    continue;
                }
                exported.push(r.clone());
                self.group_usage.get_or_create(&GroupLabels { group: g.clone(), resource: r.clone() }).set(gauge_value(*v));
            }
            for (r, v) in totals {
                if !written.exported(r, &self.series_dropped) {
                    continue;
                }
                exported.push(r.clone());
                self.group_total.get_or_create(&GroupLabels { group: g.clone(), resource: r.clone() }).set(gauge_value(*v));
            }
            seen.insert(g.clone(), exported);
        }
        for (g, resources) in &written.groups {
            for r in resources {
                if !seen.get(g).is_some_and(|now| now.contains(r)) {
                    let l = GroupLabels { group: g.clone(), resource: r.clone() };
                    self.group_usage.remove(&l);
                    self.group_total.remove(&l);
                }
            }
        }
        written.groups = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_agents_and_old_states_leave_the_exposition() {
        let m = Metrics::new();
        let snap = |state: &str| AgentSnapshot {
            group: "g".into(),
            state: state.into(),
            usage: vec![("memory".into(), "bytes".into(), 5)],
            limits: vec![("memory".into(), 1, 2, 3)],
        };
        m.agents(BTreeMap::from([("a".to_owned(), snap("running"))]));
        let text = m.encode();
        assert!(text.contains(r#"allot_agent_usage{agent="a",resource="memory",unit="bytes"} 5"#), "{text}");
        assert!(text.contains(r#"allot_agent_up{agent="a",group="g",state="running"} 1"#), "{text}");
        m.agents(BTreeMap::from([("a".to_owned(), snap("suspended"))]));
        let text = m.encode();
        assert!(!text.contains(r#"state="running""#), "{text}");
        m.agents(BTreeMap::new());
        let text = m.encode();
        assert!(!text.contains(r#"agent="a""#), "{text}");
    }

    #[test]
    fn ten_thousand_custom_names_keep_the_exposition_bounded() {
        let m = Metrics::new();
        let agents: BTreeMap<String, AgentSnapshot> = (0..100)
            .map(|a| {
                let mut usage: Vec<(String, String, u64)> = (0..100).map(|i| (format!("custom_{a}_{i}"), "count".into(), 1)).collect();
                usage.push(("memory".into(), "bytes".into(), 7));
                let snap = AgentSnapshot { group: "g".into(), state: "running".into(), usage, limits: Vec::new() };
                (format!("agent{a}"), snap)
            })
            .collect();
        let sums: BTreeMap<String, u64> = agents.values().flat_map(|a| a.usage.iter().map(|(r, _, v)| (r.clone(), *v))).collect();
        m.agents(agents.clone());
        m.groups(BTreeMap::from([("g".to_owned(), (sums.clone(), BTreeMap::new()))]));
        let text = m.encode();
        assert!(text.len() < 256 * 1024, "{} bytes", text.len());
        assert!(
            text.contains(r#"allot_agent_usage{agent="agent99",resource="memory",unit="bytes"} 7"#),
            "built-in resources are always exported"
        );
        let names: std::collections::BTreeSet<&str> =
            text.lines().filter_map(|l| l.split("resource=\"").nth(1)).filter_map(|r| r.split('"').next()).collect();
        assert_eq!(names.len(), MAX_CUSTOM_RESOURCES + 1, "100 custom names and memory");
        let dropped = |t: &str| -> u64 {
            t.lines().find_map(|l| l.strip_prefix("allot_metric_series_dropped_total ")).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        assert_eq!(dropped(&text), 2 * (10_000 - 100), "agent and group series of 9,900 names");
        // A refresh keeps the same names: the first exported keep their place.
        m.agents(agents);
        let again = m.encode();
        assert!(again.contains(r#"resource="custom_0_0""#), "{again}");
        // When the agents exit, their names free the places.
        m.agents(BTreeMap::new());
        m.groups(BTreeMap::new());
        assert!(!m.encode().contains("custom_"), "{}", m.encode());
    }

    #[test]
    fn counters_have_the_total_suffix() {
        let m = Metrics::new();
        m.event();
        m.tick(0.5);
        m.enforcement("a", "suspend", allot_store::Outcome::Success);
        let text = m.encode();
        for want in [
            "allot_events_total 1",
            "allot_governor_ticks_total 1",
            r#"allot_enforcement_total{agent="a",action="suspend",outcome="success"} 1"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }
}
