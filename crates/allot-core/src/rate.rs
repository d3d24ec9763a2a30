//! Rates from cumulative counters (cpu time, bytes read or sent).
//!
//! The kernel reports totals since a process or cgroup began; allot's limits
//! are per second. [`Rate`] remembers the previous value and its time and turns
//! each new value into a rate per second, in integers, without overflow: the
//! arithmetic runs in `u128` and saturates at `u64::MAX`.
//!
//! A rate is computed only over an interval of at least
//! [`MIN_RATE_INTERVAL_MS`]: over a few milliseconds a counter advances in
//! steps (a scheduler tick, one write), so a rate from such an interval says
//! nothing (a process using 30m read 1,650m over 2 ms). A value read sooner
//! after the previous one gives no rate and is not remembered: the next rate
//! is measured from the earlier value, over the whole interval.

use crate::time::Time;

/// Nanoseconds of cpu time per second per millicore.
const NS_PER_MILLICORE_SECOND: u64 = 1_000_000;

/// The shortest interval, in milliseconds, a rate is computed over.
pub const MIN_RATE_INTERVAL_MS: u64 = 100;

/// The previous value of one cumulative counter and when it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    last: Option<(u64, Time)>,
}

impl Rate {
    /// A rate with no previous value.
    pub const fn new() -> Self {
        Rate { last: None }
    }

    /// Feed a cumulative counter's value at `at`; the rate per second since the previous value. None on the first call,
    /// when less than [`MIN_RATE_INTERVAL_MS`] passed, or when the time went backwards; a counter that went backwards counts as 0.
    ///
    /// The value becomes the previous one, except when it came less than
    /// [`MIN_RATE_INTERVAL_MS`] after the previous one (then the next rate is
    /// measured from the previous value, over the whole interval). After a
    /// first call or a time that went backwards, the next rate is measured
    /// from this value.
    pub fn per_second(&mut self, value: u64, at: Time) -> Option<u64> {
        let Some((prev, then)) = self.last else {
            self.last = Some((value, at));
            return None;
        };
        let Some(elapsed_ms) = at.as_millis().checked_sub(then.as_millis()) else {
            self.last = Some((value, at));
            return None;
        };
        if elapsed_ms < MIN_RATE_INTERVAL_MS {
            return None;
        }
        self.last = Some((value, at));
        let delta = u128::from(value.saturating_sub(prev));
        let rate = delta.saturating_mul(1000) / u128::from(elapsed_ms);
        Some(u64::try_from(rate).unwrap_or(u64::MAX))
    }

    /// Forget the previous value (the counter restarted, for example a new process).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The previous value and its time, if any.
    pub fn last(&self) -> Option<(u64, Time)> {
        self.last
    }
}

/// Millicores from a cpu-time counter in nanoseconds: per_second(ns) / 1_000_000.
pub fn cpu_millicores(rate: &mut Rate, cpu_ns: u64, at: Time) -> Option<u64> {
    rate.per_second(cpu_ns, at).map(|ns_per_s| ns_per_s / NS_PER_MILLICORE_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_gives_nothing_then_the_rate_per_second() {
        let mut r = Rate::new();
        assert_eq!(r.per_second(1000, Time::from_secs(1)), None);
        assert_eq!(r.per_second(3000, Time::from_secs(3)), Some(1000));
        assert_eq!(r.per_second(3500, Time::from_millis(3250)), Some(2000));
        assert_eq!(r.last(), Some((3500, Time::from_millis(3250))));
    }

    #[test]
    fn no_elapsed_time_backwards_counters_and_reset() {
        let mut r = Rate::default();
        r.per_second(10, Time::from_secs(5));
        assert_eq!(r.per_second(20, Time::from_secs(5)), None, "no time passed");
        assert_eq!(r.last(), Some((10, Time::from_secs(5))), "kept: no interval");
        assert_eq!(r.per_second(30, Time::from_secs(4)), None, "time went backwards");
        assert_eq!(r.last(), Some((30, Time::from_secs(4))), "measured from here on");
        assert_eq!(r.per_second(5, Time::from_secs(6)), Some(0), "the counter went backwards");
        assert_eq!(r.per_second(105, Time::from_secs(7)), Some(100), "measured from the value that went backwards");
        r.reset();
        assert_eq!(r, Rate::new());
        assert_eq!(r.per_second(1_000_000, Time::from_secs(8)), None);
    }

    #[test]
    fn huge_rates_saturate() {
        let mut r = Rate::new();
        r.per_second(0, Time::from_millis(0));
        assert_eq!(r.per_second(u64::MAX, Time::from_millis(MIN_RATE_INTERVAL_MS)), Some(u64::MAX));
        r.per_second(0, Time::from_millis(0));
        assert_eq!(r.per_second(u64::MAX, Time::from_millis(u64::MAX)), Some(1000));
    }

    #[test]
    fn cpu_time_becomes_millicores() {
        let mut r = Rate::new();
        assert_eq!(cpu_millicores(&mut r, 0, Time::from_secs(10)), None);
        // 1.5 cores busy for 2 s: 3e9 ns.
        assert_eq!(cpu_millicores(&mut r, 3_000_000_000, Time::from_secs(12)), Some(1500));
        // a quarter core for 100 ms.
        assert_eq!(cpu_millicores(&mut r, 3_025_000_000, Time::from_millis(12_100)), Some(250));
    }

    #[test]
    fn intervals_shorter_than_the_minimum_give_no_rate_and_keep_the_base() {
        // A process using 30m whose cpu time advanced by one 4 ms scheduler
        // step 2 ms after the last sample: 2,000m over that interval.
        let mut r = Rate::new();
        assert_eq!(cpu_millicores(&mut r, 0, Time::from_millis(1_000)), None);
        assert_eq!(cpu_millicores(&mut r, 4_000_000, Time::from_millis(1_002)), None, "2 ms: no rate");
        assert_eq!(cpu_millicores(&mut r, 4_000_000, Time::from_millis(1_099)), None, "99 ms: no rate");
        assert_eq!(r.last(), Some((0, Time::from_millis(1_000))), "the base stays");
        assert_eq!(cpu_millicores(&mut r, 30_000_000, Time::from_millis(2_000)), Some(30), "over the whole second");
        assert_eq!(cpu_millicores(&mut r, 33_000_000, Time::from_millis(2_100)), Some(30), "exactly the minimum");
    }
}
