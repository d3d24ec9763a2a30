//! The `[retention]` table: how long the state database keeps each table,
//! how large it may grow, how often the governor prunes, and how long the
//! governor remembers exited agents.
//!
//! ```toml
//! [retention]
//! samples = "24h"          # raw samples
//! rollups = "30d"          # per-minute rollups
//! events = "30d"
//! enforcement = "90d"      # open escalations are always kept
//! analyses = "30d"         # of agents that exited
//! exited_agents = "7d"     # rows of exited agents in the store
//! max_size = "1Gi"         # or "none"; the oldest rows of the largest history table go first
//! batch = 5000             # rows per table per pruning pass
//! interval = "1m"          # how often the governor prunes (sooner while rows remain)
//! forget_exited_after = "1h"   # exited agents leave the governor's memory after this
//! forget_exited_beyond = 1000  # or when more than this many have exited (the oldest go)
//! ```

use super::context::{Ctx, Value};
use allot_core::Resource;
use allot_store::Retention;
use std::time::Duration;

/// The `[retention]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// What the store keeps, applied by [`allot_store::Store::prune`].
    pub store: Retention,
    /// How often the governor prunes (default 1 min); while a pass leaves rows to delete, the next runs at the next tick.
    pub interval: Duration,
    /// An exited agent leaves the governor's memory this long after it exited (default 1 h).
    pub forget_exited_after: Duration,
    /// At most this many exited agents are kept in memory, the most recent (default 1,000).
    pub forget_exited_beyond: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            store: Retention::default(),
            interval: Duration::from_secs(60),
            forget_exited_after: Duration::from_secs(3600),
            forget_exited_beyond: 1_000,
        }
    }
}

const KEYS: &[&str] = &[
    "samples",
    "rollups",
    "events",
    "enforcement",
    "analyses",
    "exited_agents",
    "max_size",
    "batch",
    "interval",
    "forget_exited_after",
    "forget_exited_beyond",
];

const MINUTE: Duration = Duration::from_secs(60);
/// The longest any duration of the table may be (ten years).
const LONGEST: Duration = Duration::from_secs(3650 * 86_400);
/// The smallest size cap.
const SMALLEST_CAP: u64 = 1 << 20;

/// The `[retention]` table `v`; what is missing or wrong keeps its default.
pub(super) fn parse_retention(cx: &mut Ctx<'_>, v: &Value<'_>) -> RetentionSettings {
    let mut st = RetentionSettings::default();
    let Some(t) = cx.table(v, "retention") else { return st };
    cx.only(t, "retention", KEYS);
    let r = &mut st.store;
    for (key, slot, least) in [
        ("samples", &mut r.samples, MINUTE),
        ("rollups", &mut r.rollups, MINUTE),
        ("events", &mut r.events, MINUTE),
        ("enforcement", &mut r.enforcement, MINUTE),
        ("analyses", &mut r.analyses, MINUTE),
        ("exited_agents", &mut r.exited_agents, MINUTE),
        ("interval", &mut st.interval, Duration::from_secs(1)),
        ("forget_exited_after", &mut st.forget_exited_after, Duration::ZERO),
    ] {
        let Some(dv) = t.get(key) else { continue };
        let field = format!("retention.{key}");
        if let Some(d) = cx.duration(dv, &field) {
            let in_range = bounded(d, least);
            if let Some(d) = cx.check(dv.span(), &field, in_range) {
                *slot = d;
            }
        }
    }
    if let Some(mv) = t.get("max_size") {
        if let Some(cap) = max_size(cx, mv) {
            r.max_size = cap;
        }
    }
    for (key, slot, range) in
        [("batch", &mut r.batch, 1..=1_000_000), ("forget_exited_beyond", &mut st.forget_exited_beyond, 0..=1_000_000)]
    {
        let Some(nv) = t.get(key) else { continue };
        let field = format!("retention.{key}");
        let in_range =
            |k: i64| usize::try_from(k).ok().filter(|k| range.contains(k)).ok_or_else(|| format!("use {}..{}", range.start(), range.end()));
        if let Some(n) = cx.integer(nv, &field).and_then(|k| cx.check(nv.span(), &field, in_range(k))) {
            *slot = n;
        }
    }
    st
}

/// `d` if it lies between `least` and ten years.
fn bounded(d: Duration, least: Duration) -> Result<Duration, String> {
    let show = allot_core::quantity::format_duration;
    if d < least {
        Err(format!("must be at least {}", show(least)))
    } else if d > LONGEST {
        Err(format!("must be at most {} (ten years)", show(LONGEST)))
    } else {
        Ok(d)
    }
}

/// `max_size`: a size in bytes (`"1Gi"`, `"500M"`, at least 1Mi), or `"none"` for no cap.
fn max_size(cx: &mut Ctx<'_>, v: &Value<'_>) -> Option<Option<u64>> {
    const FIELD: &str = "retention.max_size";
    if let toml::de::DeValue::String(s) = v.get_ref() {
        if s.as_ref() == "none" {
            return Some(None);
        }
    }
    let q = cx.quantity(v, &Resource::Memory, FIELD)?;
    let least = if q.value >= SMALLEST_CAP { Ok(q.value) } else { Err("must be at least 1Mi, or \"none\" for no cap") };
    cx.check(v.span(), FIELD, least).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::parse;

    fn errors(text: &str) -> Vec<String> {
        parse(text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_every_key() {
        let f = parse("").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.retention, RetentionSettings::default());
        let text = r#"
[retention]
samples = "6h"
rollups = "7d"
events = "14d"
enforcement = "180d"
analyses = "2d"
exited_agents = "1d"
max_size = "256Mi"
batch = 100
interval = "30s"
forget_exited_after = "10m"
forget_exited_beyond = 5
"#;
        let r = parse(text).unwrap_or_else(|e| panic!("{e:?}")).retention;
        let h = |n: u64| Duration::from_secs(n * 3600);
        let s = &r.store;
        assert_eq!(
            (s.samples, s.rollups, s.events, s.enforcement, s.analyses, s.exited_agents),
            (h(6), h(168), h(336), h(4320), h(48), h(24))
        );
        assert_eq!((s.max_size, s.batch), (Some(256 << 20), 100));
        assert_eq!((r.interval, r.forget_exited_after, r.forget_exited_beyond), (Duration::from_secs(30), Duration::from_secs(600), 5));
        let none = parse("[retention]\nmax_size = \"none\"\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(none.retention.store.max_size, None);
    }

    #[test]
    fn bad_values_are_reported_at_their_place() {
        let e = errors("[retention]\nsamples = \"soon\"\n");
        assert!(e.len() == 1 && e[0].starts_with("2:11: retention.samples: \"soon\" is not a valid duration"), "{e:?}");
        assert_eq!(errors("[retention]\nevents = \"10s\"\n"), ["2:10: retention.events: must be at least 1m"]);
        let e = errors("[retention]\nenforcement = \"1000000000h\"\n");
        // Every duration is bounded by the parser (365d).
        assert!(e.len() == 1 && e[0].starts_with("2:15: retention.enforcement: ") && e[0].contains("at most 365d"), "{e:?}");
        assert_eq!(
            errors("[retention]\nmax_size = \"10Ki\"\n"),
            ["2:12: retention.max_size: must be at least 1Mi, or \"none\" for no cap"]
        );
        let e = errors("[retention]\nmax_size = \"lots\"\n");
        assert!(e.len() == 1 && e[0].starts_with("2:12: retention.max_size: \"lots\" is not a valid"), "{e:?}");
        assert_eq!(errors("[retention]\nbatch = 0\n"), ["2:9: retention.batch: use 1..1000000"]);
        assert_eq!(errors("[retention]\nforget_exited_beyond = -1\n"), ["2:24: retention.forget_exited_beyond: use 0..1000000"]);
        let e = errors("[retention]\nsample = \"1h\"\n");
        assert!(e.len() == 1 && e[0].starts_with("2:1: retention.sample: unknown key; expected one of samples, rollups"), "{e:?}");
        assert_eq!(errors("retention = 5\n"), ["1:13: retention: expected a table, found an integer"]);
    }
}
