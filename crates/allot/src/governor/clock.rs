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
}

impl Clock {
    /// A clock starting now at the current wall time.
    pub fn start() -> Clock {
        let start_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis);
        Clock { start: Instant::now(), start_ms }
    }

    /// The core time now.
    pub fn now(&self) -> Time {
        self.at(Instant::now())
    }

    /// The core time of an instant.
    pub fn at(&self, i: Instant) -> Time {
        Time::from_millis(self.start_ms + allot_core::time::duration_millis(i.saturating_duration_since(self.start)))
    }

    /// The instant of a core time.
    pub fn instant(&self, t: Time) -> Instant {
        self.start + std::time::Duration::from_millis(t.as_millis().saturating_sub(self.start_ms))
    }
}

/// RFC 3339 text of a core time (UTC, milliseconds).
pub fn rfc3339(t: Time) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.as_millis());
    humantime::format_rfc3339_millis(st).to_string()
}
