//! Per-minute rollups (min, mean, p95, max) of usage samples.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One minute of one agent's resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// Smallest sample.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// 95th percentile (nearest rank).
    pub p95: u64,
    /// Largest sample.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

/// Summarise samples of one minute; `None` when empty.
pub fn summarize(minute: u64, samples: &[u64]) -> Option<Rollup> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let n = v.len();
    let rank = (n * 95).div_ceil(100).max(1) - 1;
    let sum: u128 = v.iter().map(|x| u128::from(*x)).sum();
    Some(Rollup { minute, min: v[0], mean: sum as f64 / n as f64, p95: v[rank], max: v[n - 1], count: n as u64 })
}

/// Collects samples per (agent, resource) and hands out finished minutes.
#[derive(Debug, Default)]
pub struct Roller {
    open: BTreeMap<(String, String), (u64, Vec<u64>)>,
}

impl Roller {
    /// Add a sample taken at `at_ms`; returns the previous minute's rollup
    /// when this sample starts a new minute.
    pub fn add(&mut self, agent: &str, resource: &str, value: u64, at_ms: u64) -> Option<Rollup> {
        let minute = at_ms / 60_000;
        let slot = self.open.entry((agent.to_owned(), resource.to_owned())).or_insert((minute, Vec::new()));
        let mut done = None;
        if slot.0 != minute {
            done = summarize(slot.0, &slot.1);
            *slot = (minute, Vec::new());
        }
        slot.1.push(value);
        done
    }

    /// The minutes still open of one agent, per resource (when it is forgotten).
    pub fn flush_agent(&mut self, agent: &str) -> Vec<(String, Rollup)> {
        let keys: Vec<(String, String)> = self.open.keys().filter(|(a, _)| a == agent).cloned().collect();
        keys.into_iter().filter_map(|k| self.open.remove(&k).and_then(|(m, s)| summarize(m, &s)).map(|x| (k.1, x))).collect()
    }

    /// Everything still open (at shutdown).
    pub fn flush(&mut self) -> Vec<(String, String, Rollup)> {
        std::mem::take(&mut self.open).into_iter().filter_map(|((a, r), (m, s))| summarize(m, &s).map(|x| (a, r, x))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let r = summarize(7, &(1..=100).collect::<Vec<_>>()).unwrap();
        assert_eq!((r.min, r.p95, r.max, r.count), (1, 95, 100, 100));
        assert!((r.mean - 50.5).abs() < 1e-9);
        assert_eq!(summarize(0, &[]), None);
        assert_eq!(summarize(0, &[5]).unwrap().p95, 5);
    }

    #[test]
    fn the_roller_closes_minutes() {
        let mut r = Roller::default();
        assert_eq!(r.add("a", "cpu", 10, 0), None);
        assert_eq!(r.add("a", "cpu", 30, 59_999), None);
        let done = r.add("a", "cpu", 5, 60_000).unwrap();
        assert_eq!((done.minute, done.min, done.max), (0, 10, 30));
        assert_eq!(r.flush().len(), 1);
    }

    #[test]
    fn one_agents_open_minutes_are_flushed_alone() {
        let mut r = Roller::default();
        r.add("a", "cpu", 10, 0);
        r.add("a", "memory", 20, 0);
        r.add("b", "cpu", 30, 0);
        let a = r.flush_agent("a");
        assert_eq!(a.iter().map(|(res, x)| (res.as_str(), x.max)).collect::<Vec<_>>(), [("cpu", 10), ("memory", 20)]);
        assert!(r.flush_agent("a").is_empty());
        assert_eq!(r.flush().len(), 1, "b's minute is still open");
    }
}
