//! Time as the core sees it: an instant passed in by the caller.
//!
//! The core never reads a clock. Callers hand it [`Time`] values (milliseconds
//! since an epoch of their choosing, usually the Unix epoch) and every decision
//! is a function of those values, so a recorded run can be replayed exactly.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A point in time, in milliseconds since the caller's epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The epoch itself.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }

    /// A time `s` seconds after the epoch.
    pub const fn from_secs(s: u64) -> Self {
        Time(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time `d` later (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Time(self.0.saturating_add(duration_millis(d)))
    }

    /// How long after `earlier` this is (zero when it is not later).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Time::from_millis(u64::MAX - 1).plus(Duration::from_secs(1)), Time::from_millis(u64::MAX));
        assert_eq!(Time::from_secs(1).since(Time::from_secs(5)), Duration::ZERO);
        assert_eq!(Time::from_secs(5).since(Time::from_secs(1)), Duration::from_secs(4));
    }
}
