//! The `[policy]` table: the enforcement policy's delays and deadlines and
//! the governor's sampling and analytics cadence, with their defaults.

use super::context::{Ctx, Table, Value};
use allot_core::limits::Action;
use std::time::Duration;

/// Governor settings of the `[policy]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The enforcement policy configuration.
    pub policy: allot_core::PolicyConfig,
    /// Sampling interval for memory, cpu and processes (default 1 s).
    pub sample_interval: Duration,
    /// Every how many samples files, sockets and I/O are read (default 5).
    pub slow_every: u32,
    /// How often analytics run (default 5 min).
    pub analytics_interval: Duration,
    /// The window analytics look at (default 1 h).
    pub analytics_window: Duration,
    /// Warn when the hard limit is forecast within this (default 10 min).
    pub forecast_horizon: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: allot_core::PolicyConfig::default(),
            sample_interval: Duration::from_secs(1),
            slow_every: 5,
            analytics_interval: Duration::from_secs(300),
            analytics_window: Duration::from_secs(3600),
            forecast_horizon: Duration::from_secs(600),
        }
    }
}

const KEYS: &[&str] = &[
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
];

/// The `[policy]` table `v`; what is missing or wrong keeps its default.
pub(super) fn parse_settings(cx: &mut Ctx<'_>, v: &Value<'_>) -> Settings {
    let mut st = Settings::default();
    let Some(t) = cx.table(v, "policy") else { return st };
    cx.only(t, "policy", KEYS);
    if let Some(d) = t.get("delays") {
        delays(cx, d, &mut st.policy);
    }
    durations(cx, t, &mut st);
    if st.analytics_interval < Duration::from_secs(1) {
        cx.err(t.get("analytics_interval").map_or(v.span(), |x| x.span()), "policy.analytics_interval", "must be at least 1s");
    }
    if st.sample_interval < Duration::from_millis(10) {
        cx.err(t.get("sample_interval").map_or(v.span(), |x| x.span()), "policy.sample_interval", "must be at least 10ms");
    }
    if let Some(n) = t.get("slow_every") {
        let in_range = |k: i64| u32::try_from(k).ok().filter(|k| (1..=3600).contains(k)).ok_or("use 1..3600");
        if let Some(k) = cx.integer(n, "policy.slow_every").and_then(|k| cx.check(n.span(), "policy.slow_every", in_range(k))) {
            st.slow_every = k;
        }
    }
    st
}

/// `policy.delays`: the delay before each action.
fn delays(cx: &mut Ctx<'_>, d: &Value<'_>, policy: &mut allot_core::PolicyConfig) {
    let Some(dt) = cx.table(d, "policy.delays") else { return };
    for (k, dv) in dt.iter() {
        let f = format!("policy.delays.{}", k.get_ref());
        if let Some(action) = cx.check(k.span(), &f, k.get_ref().parse::<Action>()) {
            if let Some(dur) = cx.duration(dv, &f) {
                policy.delays.insert(action, dur);
            }
        }
    }
}

/// The keys of `[policy]` that hold a duration.
fn durations(cx: &mut Ctx<'_>, t: &Table<'_>, st: &mut Settings) {
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
        if let Some(d) = t.get(key).and_then(|dv| cx.duration(dv, &format!("policy.{key}"))) {
            *slot = d;
        }
    }
}
