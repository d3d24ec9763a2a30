//! What a report reads: each agent's series within the caps (raw samples, else
//! per-minute rollups, else refused naming `since`), limits, actions, analyses.

use super::{REPORT_MAX_MINUTES, REPORT_MAX_POINTS, REPORT_MAX_SAMPLES, Range, ReadError, resource};
use allot_store::Store;
use serde::Serialize;
use serde_json::Value;

/// What a report may read: per agent and resource (`samples`, `minutes`),
/// and in all (`points`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    samples: usize,
    minutes: usize,
    points: usize,
}

pub(super) const CAPS: Caps = Caps { samples: REPORT_MAX_SAMPLES, minutes: REPORT_MAX_MINUTES, points: REPORT_MAX_POINTS };

/// One resource's readings over a report's range, read within the caps.
struct Read {
    /// The samples the range holds.
    samples: usize,
    /// `samples` (each raw sample read) or `rollups` (per-minute summaries).
    source: &'static str,
    min: u64,
    mean: f64,
    p50: u64,
    p95: u64,
    max: u64,
    /// The points drawn: each sample, or each minute's mean.
    series: Vec<(u64, u64)>,
}

/// An agent's readings of `resource` over `range`: the raw samples when
/// there are at most `caps.samples` (and `left`, what the report may still
/// read), else the per-minute rollups (min, max and mean exact; p50 and p95
/// those of the minutes' means and p95s) when there are at most
/// `caps.minutes` (and `left`), else an error naming `since`. What is read
/// is taken from `left`. `None`: nothing in the range.
fn read_series(store: &Store, agent: &str, resource: &str, range: Range, caps: Caps, left: &mut usize) -> Result<Option<Read>, ReadError> {
    let Range { since_ms, until_ms } = range;
    let max_samples = caps.samples.min(*left);
    let series = store.samples_between(agent, resource, since_ms, until_ms, max_samples + 1)?;
    if series.is_empty() {
        return Ok(None);
    }
    if series.len() <= max_samples {
        *left -= series.len();
        let mut sorted: Vec<u64> = series.iter().map(|s| s.1).collect();
        sorted.sort_unstable();
        return Ok(Some(Read {
            samples: series.len(),
            source: "samples",
            min: sorted[0],
            mean: sorted.iter().map(|v| *v as f64).sum::<f64>() / sorted.len() as f64,
            p50: pct(&sorted, 50.0),
            p95: pct(&sorted, 95.0),
            max: sorted[sorted.len() - 1],
            series,
        }));
    }
    drop(series);
    let too_long = |why: String| {
        ReadError::invalid(
            "since",
            format!(
                "since: the range {} holds more than {max_samples} samples of {agent}'s {resource} and {why}; \
                 give a later since (or an earlier until)",
                range.describe()
            ),
        )
    };
    let max_minutes = caps.minutes.min(*left);
    let rollups = store.rollups_between(agent, resource, since_ms / 60_000, until_ms / 60_000, max_minutes + 1)?;
    if rollups.is_empty() {
        return Err(too_long("no per-minute summaries to report it from".into()));
    }
    if rollups.len() > max_minutes {
        let why = if max_minutes < caps.minutes {
            format!("more per-minute summaries than the {max_minutes} points this report may still read (at most {} in all)", caps.points)
        } else {
            format!("more than {max_minutes} per-minute summaries (a report reads at most that many)")
        };
        return Err(too_long(why));
    }
    *left -= rollups.len();
    let count: u64 = rollups.iter().map(|r| r.count).sum();
    let mean = rollups.iter().map(|r| r.mean * r.count as f64).sum::<f64>() / count.max(1) as f64;
    let mut means: Vec<u64> = rollups.iter().map(|r| r.mean.round() as u64).collect();
    means.sort_unstable();
    let mut p95s: Vec<u64> = rollups.iter().map(|r| r.p95).collect();
    p95s.sort_unstable();
    Ok(Some(Read {
        samples: usize::try_from(count).unwrap_or(usize::MAX),
        source: "rollups",
        min: rollups.iter().map(|r| r.min).min().unwrap_or(0),
        mean,
        p50: pct(&means, 50.0),
        p95: pct(&p95s, 95.0),
        max: rollups.iter().map(|r| r.max).max().unwrap_or(0),
        series: rollups.iter().map(|r| (r.minute * 60_000, r.mean.round() as u64)).collect(),
    }))
}

#[derive(Debug, Serialize)]
pub(super) struct ResourceReport {
    pub(super) resource: String,
    unit: &'static str,
    samples: usize,
    /// Where the figures come from: `samples` (raw) or `rollups` (per-minute summaries).
    source: &'static str,
    /// The points read and drawn (samples, or minutes).
    points: usize,
    pub(super) min: u64,
    pub(super) mean: f64,
    pub(super) p50: u64,
    pub(super) p95: u64,
    pub(super) max: u64,
    pub(super) soft: Option<u64>,
    pub(super) hard: Option<u64>,
    pub(super) burst: Option<u64>,
    pub(super) violations: usize,
    pub(super) actions: Vec<Action>,
    pub(super) pattern: Option<String>,
    pub(super) recommendation: Option<Value>,
    #[serde(skip)]
    pub(super) series: Vec<(u64, u64)>,
}

#[derive(Debug, Serialize, Clone)]
pub(super) struct Action {
    pub(super) at_ms: u64,
    pub(super) action: String,
    pub(super) outcome: String,
    pub(super) detail: String,
}

#[derive(Debug, Serialize)]
pub(super) struct AgentReport {
    pub(super) agent: String,
    pub(super) group: String,
    pub(super) state: String,
    pub(super) exit: Option<String>,
    pub(super) resources: Vec<ResourceReport>,
}

/// An agent's charts over `range` (the dashboard's): per resource its
/// points (at most `max_points`: each bucket's highest reading, so peaks
/// stay), its limits and its actions with their outcomes.
pub(crate) fn chart(store: &Store, agent: &str, range: Range, max_points: usize) -> Result<Value, ReadError> {
    let reports = build(store, Some(agent), range, CAPS)?;
    let Some(a) = reports.into_iter().next() else { return Err(ReadError::NoAgent(agent.to_owned())) };
    let resources: Vec<Value> = a
        .resources
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["points"] = serde_json::json!(thin(&r.series, max_points));
            v
        })
        .collect();
    Ok(serde_json::json!({"agent": a.agent, "since_ms": range.since_ms, "until_ms": range.until_ms, "resources": resources}))
}

/// At most `max` points: consecutive points in equal buckets, each its first time and highest value.
fn thin(series: &[(u64, u64)], max: usize) -> Vec<(u64, u64)> {
    if series.len() <= max || max == 0 {
        return series.to_vec();
    }
    let per = series.len().div_ceil(max);
    series.chunks(per).map(|c| (c[0].0, c.iter().map(|p| p.1).max().unwrap_or(0))).collect()
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)]
}

pub(super) fn build(store: &Store, agent: Option<&str>, range: Range, caps: Caps) -> Result<Vec<AgentReport>, ReadError> {
    let Range { since_ms, until_ms } = range;
    let mut left = caps.points;
    let history = store.history(agent)?;
    let analyses = store.analyses(agent)?;
    let mut out = Vec::new();
    for a in store.agents()?.into_iter().filter(|a| agent.is_none_or(|x| x == a.id)) {
        let mut resources = Vec::new();
        for r in store.sampled_resources(&a.id)? {
            let Some(read) = read_series(store, &a.id, &r, range, caps, &mut left)? else { continue };
            let limit = &a.spec["quota"]["limits"][&r];
            // The resource's own records, and the agent-wide ones (an operator's action, resource `-`) on every resource.
            let mine = |h: &&allot_store::EnforcementRecord| {
                h.agent == a.id && (h.resource == r || h.resource == "-") && (since_ms..=until_ms).contains(&h.at_ms)
            };
            let violations = history.iter().filter(mine).filter(|h| h.action == "warn").count();
            let actions = history
                .iter()
                .filter(mine)
                .filter(|h| h.action != "warn" && !h.action.ends_with("(scheduled)"))
                .map(|h| Action { at_ms: h.at_ms, action: h.action.clone(), outcome: h.outcome.clone(), detail: h.detail.clone() })
                .collect();
            let analysis = analyses.iter().find(|x| x.0 == a.id && x.1 == r);
            let res = resource(&r);
            resources.push(ResourceReport {
                unit: res.unit().name(),
                samples: read.samples,
                source: read.source,
                points: read.series.len(),
                min: read.min,
                mean: read.mean,
                p50: read.p50,
                p95: read.p95,
                max: read.max,
                soft: limit["soft"].as_u64(),
                hard: limit["hard"].as_u64(),
                burst: limit["burst"].as_u64(),
                violations,
                actions,
                pattern: analysis.and_then(|x| x.3["pattern"].as_str().map(str::to_owned)),
                recommendation: analysis.and_then(|x| x.4.clone()),
                resource: r,
                series: read.series,
            });
        }
        out.push(AgentReport { agent: a.id, group: a.group, state: a.state, exit: a.exit, resources });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::report::NOW;

    /// A store with 120 memory samples of `a` (one a second over two whole
    /// minutes, 1..=120) with their two rollups, and the same cpu samples without rollups.
    fn two_minutes() -> (tempfile::TempDir, Store, Range) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut store = Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let t0 = NOW - 10 * 60_000;
        let rows: Vec<(String, String, u64, u64)> =
            (0..120).flat_map(|i| ["memory", "cpu"].map(|r| ("a".to_owned(), r.to_owned(), t0 + i * 1000, i + 1))).collect();
        store.put_samples(&rows).unwrap_or_else(|e| panic!("{e}"));
        for m in 0..2u64 {
            let values: Vec<u64> = (m * 60 + 1..=m * 60 + 60).collect();
            let r = allot_store::rollup::summarize(t0 / 60_000 + m, &values).unwrap_or_else(|| panic!("a rollup"));
            store.put_rollup("a", "memory", &r).unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, store, Range { since_ms: t0 - 60_000, until_ms: NOW })
    }

    fn since_error(r: Result<Option<Read>, ReadError>) -> String {
        match r {
            Err(ReadError::Invalid { field, message }) if field == "since" => message,
            Err(e) => panic!("not an error naming since: {e:?}"),
            Ok(v) => panic!("read: {:?}", v.map(|r| (r.source, r.samples, r.series.len()))),
        }
    }

    #[test]
    fn a_report_reads_raw_samples_within_the_cap_else_rollups_else_refuses_naming_since() {
        let (_dir, store, range) = two_minutes();
        let caps = Caps { samples: 200, minutes: 10, points: 1000 };
        let mut left = caps.points;
        let raw =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((raw.source, raw.samples, raw.series.len(), raw.min, raw.max, left), ("samples", 120, 120, 1, 120, 880));

        // Over the sample cap: from the two rollups, every sample counted, min, max and mean exact.
        let caps = Caps { samples: 100, ..caps };
        let mut left = caps.points;
        let r =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((r.source, r.samples, r.series.len(), r.min, r.max, left), ("rollups", 120, 2, 1, 120, 998));
        assert!((r.mean - 60.5).abs() < 1e-9, "{}", r.mean);
        // Over the minute cap too, or without rollups: refused, naming since.
        let m = since_error(read_series(&store, "a", "memory", range, Caps { minutes: 1, ..caps }, &mut 1000));
        assert!(m.contains("more than 1 per-minute summaries"), "{m}");
        let m = since_error(read_series(&store, "a", "cpu", range, caps, &mut 1000));
        assert!(m.contains("no per-minute summaries"), "{m}");

        // What the report may still read bounds each series: 101 left reads the rollups, 1 left nothing.
        let caps = Caps { samples: 200, minutes: 10, points: 1000 };
        let mut left = 101;
        let r =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((r.source, left), ("rollups", 99));
        let m = since_error(read_series(&store, "a", "memory", range, caps, &mut 1));
        assert!(m.contains("may still read") && m.contains("1000 in all"), "{m}");
        // Nothing in the range: nothing read.
        let empty = Range { since_ms: NOW - 60_000, until_ms: NOW };
        assert!(read_series(&store, "a", "memory", empty, caps, &mut 1000).unwrap_or_else(|e| panic!("{e}")).is_none());
    }
}
