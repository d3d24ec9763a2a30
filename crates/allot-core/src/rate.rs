//! Rates from cumulative counters (cpu time, bytes read or sent).
//!
//! The kernel reports totals since a process or cgroup began; allot's limits
//! are per second. [`Rate`] remembers the previous value and its time and turns
//! each new value into a rate per second, in integers, without overflow: the
//! arithmetic runs in `u128` and saturates at `u64::MAX`.

use crate::time::Time;

/// Nanoseconds of cpu time per second per millicore.
const NS_PER_MILLICORE_SECOND: u64 = 1_000_000;

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

    /// Feed a cumulative counter's value at `at`; the rate per second since the previous value. None on the first call or when no time passed; a counter that went backwards counts as 0.
    ///
    /// The value is remembered in every case, so after a call that returned
    /// `None` (also when the time went backwards) the next rate is measured
    /// from this value.
    pub fn per_second(&mut self, value: u64, at: Time) -> Option<u64> {
        let (prev, then) = self.last.replace((value, at))?;
        let elapsed_ms = at.as_millis().checked_sub(then.as_millis()).filter(|ms| *ms > 0)?;
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
        assert_eq!(r.per_second(30, Time::from_secs(4)), None, "time went backwards");
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
        assert_eq!(r.per_second(u64::MAX, Time::from_millis(1)), Some(u64::MAX));
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
}
