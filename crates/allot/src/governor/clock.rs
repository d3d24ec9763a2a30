//! The governor's clock: tokio's `Instant` (so tests can pause and advance
//! time) mapped onto the core's `Time` (milliseconds since the Unix epoch at
//! the governor's start).

use allot_core::Time;
use tokio::time::Instant;

/// Maps between tokio instants and core times.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_ms: u64,
    /// The wall time at `start` in microseconds, so that a time is truncated to
    /// the millisecond once (at most 1 ms early), not twice.
    start_us: u128,
}

impl Clock {
    /// A clock starting now at the current wall time.
    pub fn start() -> Clock {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let start_us = since_epoch.as_micros();
        Clock { start: Instant::now(), start_ms: u64::try_from(start_us / 1000).unwrap_or(u64::MAX), start_us }
    }

    /// The core time now.
    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// The core time of an instant.
    pub fn at(&self, i: Instant) -> Time {
        let us = self.start_us.saturating_add(i.saturating_duration_since(self.start).as_micros());
        Time::from_millis(u64::try_from(us / 1000).unwrap_or(u64::MAX))
    }

    /// The instant of a core time; a time further away than [`FAR`] (never
    /// reached, such as a deadline saturated at the end of time) is `FAR` away.
    pub fn instant(&self, t: Time) -> Instant {
        let after = std::time::Duration::from_millis(t.as_millis().saturating_sub(self.start_ms)).min(FAR);
        self.start.checked_add(after).unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(86_400))
    }
}

/// The furthest an instant of the governor's clock lies ahead: ten years.
pub const FAR: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// RFC 3339 text of a core time (UTC, milliseconds); a time after the year
/// 9999, which RFC 3339 cannot write, is written as its last millisecond.
pub fn rfc3339(t: Time) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.as_millis().min(LAST_RFC3339_MS));
    humantime::format_rfc3339_millis(st).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_year_9999_are_written_without_panicking() {
        assert_eq!(rfc3339(Time::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Time::from_millis(LAST_RFC3339_MS)), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(Time::from_millis(u64::MAX)), "9999-12-31T23:59:59.999Z");
    }

    #[tokio::test(start_paused = true)]
    async fn instants_of_far_times_are_capped() {
        let c = Clock::start();
        assert!(c.instant(Time::from_millis(u64::MAX)) <= Instant::now() + FAR);
        assert_eq!(c.at(Instant::now() + FAR).as_millis(), c.now().as_millis() + allot_core::time::duration_millis(FAR));
        let late = Clock { start: Instant::now(), start_ms: u64::MAX - 1, start_us: u128::from(u64::MAX - 1) * 1000 };
        assert_eq!(late.at(Instant::now() + FAR), Time::from_millis(u64::MAX));
    }
}
