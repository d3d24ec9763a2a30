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
//! `allot_governor_tick_seconds_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

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
    written: Mutex<Written>,
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
            written: Mutex::new(Written::default()),
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
        for (id, a) in &now {
            let up = UpLabels { agent: id.clone(), group: a.group.clone(), state: a.state.clone() };
            self.up.get_or_create(&up).set(i64::from(a.state != "exited"));
            for (res, unit, v) in &a.usage {
                let l = UsageLabels { agent: id.clone(), resource: res.clone(), unit: unit.clone() };
                self.usage.get_or_create(&l).set(gauge_value(*v));
            }
            for (res, soft, hard, burst) in &a.limits {
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
        for (g, resources) in &written.groups {
            for r in resources {
                let l = GroupLabels { group: g.clone(), resource: r.clone() };
                let gone = now.get(g).is_none_or(|(u, t)| !u.contains_key(r) && !t.contains_key(r));
                if gone {
                    self.group_usage.remove(&l);
                    self.group_total.remove(&l);
                }
            }
        }
        let mut seen = BTreeMap::new();
        for (g, (usage, totals)) in &now {
            for (r, v) in usage {
                self.group_usage.get_or_create(&GroupLabels { group: g.clone(), resource: r.clone() }).set(gauge_value(*v));
            }
            for (r, v) in totals {
                self.group_total.get_or_create(&GroupLabels { group: g.clone(), resource: r.clone() }).set(gauge_value(*v));
            }
            seen.insert(g.clone(), usage.keys().chain(totals.keys()).cloned().collect());
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
