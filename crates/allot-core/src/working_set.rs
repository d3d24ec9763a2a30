//! When an agent's memory figure needs its inactive file cache read afresh.
//!
//! The memory allot judges is the working set: the cgroup's usage (read
//! every sample, cheap) less its inactive file cache (from `memory.stat`,
//! the dearest file of a sample: about 20 us on cgroup v1). The cache figure
//! is read again only when a decision could depend on it:
//!
//! - The working set is at most the raw usage, whatever the cache figure.
//!   So while the raw usage is under the agent's lowest memory threshold
//!   (its soft limit: alerts, violations and escalations all start there),
//!   every decision comes out the same with a stale cache figure as with a
//!   fresh one: the working set is under the soft limit either way
//!   ([`decision_free`], checked by a property test).
//! - At or above [`MARGIN_PERCENT`] % of that threshold the figure is read
//!   every sample, so no decision near a limit uses a stale figure; the
//!   margin also keeps the figures that feed forecasts fresh as a limit nears.
//! - Otherwise it is read when it is older than the slow refresh age, so
//!   analytics and reports never see a figure older than that.
//!
//! Group totals and host pressure are judged on the sum of the members'
//! working sets; the governor refreshes every member before judging a
//! group whose raw sum reaches the margin of its total, and every candidate
//! before choosing a victim of host memory pressure.

use crate::Time;
use crate::limits::Limit;
use std::time::Duration;

/// Within this percentage of the lowest threshold, the figure is read every sample.
pub const MARGIN_PERCENT: u64 = 90;

/// The raw usage from which the cache figure is read every sample: [`MARGIN_PERCENT`]
/// of the soft limit (the lowest of soft, hard and burst); `None` without a memory limit.
pub fn watermark(limit: Option<&Limit>) -> Option<u64> {
    limit.map(|l| l.soft.min(l.hard).min(l.burst)).map(|t| t / 100 * MARGIN_PERCENT + t % 100 * MARGIN_PERCENT / 100)
}

/// Whether to read the cache figure now: the raw usage is at or above the
/// watermark, or the figure is missing or at least `max_age` old.
pub fn refresh_due(raw: u64, watermark: Option<u64>, read_at: Option<Time>, now: Time, max_age: Duration) -> bool {
    if watermark.is_some_and(|w| raw >= w) {
        return true;
    }
    match read_at {
        None => true,
        Some(at) => now.since(at) >= max_age,
    }
}

/// Whether no decision on `limit` depends on the cache figure while the raw
/// usage is `raw`: the working set is under the soft limit whatever part of
/// `raw` is inactive cache.
pub fn decision_free(raw: u64, limit: &Limit) -> bool {
    raw < limit.soft.min(limit.hard).min(limit.burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::classify;
    use crate::limits::Action;
    use proptest::prelude::*;

    fn limit(soft: u64, hard: u64, burst: u64) -> Limit {
        Limit { soft, hard, burst, burst_window: Duration::from_secs(30), action: Action::Throttle, window: None }
    }

    #[test]
    fn the_watermark_is_ninety_percent_of_the_lowest_threshold() {
        assert_eq!(watermark(Some(&limit(1000, 2000, 3000))), Some(900));
        assert_eq!(watermark(Some(&limit(u64::MAX, u64::MAX, u64::MAX))), Some(u64::MAX / 100 * 90 + 15 * 90 / 100));
        assert_eq!(watermark(None), None);
    }

    #[test]
    fn read_when_near_missing_or_old() {
        let now = Time::from_millis(100_000);
        let age = Duration::from_secs(60);
        assert!(refresh_due(900, Some(900), Some(now), now, age), "at the watermark");
        assert!(!refresh_due(899, Some(900), Some(now), now, age), "under it, fresh enough");
        assert!(refresh_due(0, Some(900), None, now, age), "never read");
        assert!(refresh_due(0, None, Some(Time::from_millis(40_000)), now, age), "60 s old");
        assert!(!refresh_due(u64::MAX, None, Some(Time::from_millis(40_001)), now, age), "no limit: only by age");
    }

    proptest! {
        /// While no refresh is due for a limit's sake, the classification of
        /// the working set is the same with any stale cache figure as with
        /// the true one: no decision uses a stale figure.
        #[test]
        fn a_stale_cache_figure_never_changes_a_decision(
            soft in 1u64..1 << 40, extra_hard in 0u64..1 << 40, extra_burst in 0u64..1 << 40,
            raw in 0u64..1 << 42, stale_frac in 0u64..=100, true_frac in 0u64..=100, above_ms in proptest::option::of(0u64..120_000),
        ) {
            let l = limit(soft, soft + extra_hard, soft + extra_hard + extra_burst);
            let now = Time::from_millis(200_000);
            let read_at = Some(now);
            if !refresh_due(raw, watermark(Some(&l)), read_at, now, Duration::from_secs(60)) {
                prop_assert!(decision_free(raw, &l));
                let stale = raw / 100 * stale_frac;
                let fresh = raw / 100 * true_frac;
                let since = above_ms.map(|ms| Time::from_millis(200_000 - ms));
                prop_assert_eq!(classify(&l, raw - stale, since, now), classify(&l, raw - fresh, since, now));
                prop_assert_eq!(classify(&l, raw - fresh, since, now), None);
            }
        }
    }
}
