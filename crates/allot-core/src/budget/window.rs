//! Budget windows: rolling (kept as buckets) and calendar (resetting at a
//! stated local time of day or of month, at a fixed UTC offset), and the
//! spend counted in each.
//!
//! **Rolling** (`100k/min`, `5M/day`): the window's length is cut into
//! `buckets` buckets of `length / buckets` (60 by default; 50 of 20 ms for a
//! one-second window). A spend is counted from the instant it happens until
//! its bucket falls out, which is between `length` (exclusive) and
//! `length + length / buckets` (inclusive) after it: never early, at most one
//! bucket width late. So the spend of any interval of `length` is counted in
//! full (no overspend over any exact window), and a budget frees up at most
//! one bucket width (1/60 of the window) later than an exact sliding window
//! would. Memory per budget: `buckets + 1` counters.
//!
//! **Calendar** (`$50/month`, `/day`): the spend since the last reset; a
//! reset falls on a stated local time (`HH:MM`) every day, or on a stated
//! day of the month (1..=28, so every month has it) at that time. The local
//! time is at a fixed UTC offset (`UTC`, `+02:00`, `-05:30`): IANA zone names
//! (`Europe/Paris`) are not supported, so a zone with daylight saving time
//! must be given as the offset in force. Calendar times need the callers'
//! [`Time`] to count from the Unix epoch.

use crate::quantity::Window;
use crate::time::Time;
use std::fmt;
use std::time::Duration;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The default number of buckets of a rolling window.
pub const DEFAULT_BUCKETS: u32 = 60;

/// A window description that is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WindowError {
    /// Where the value came from, such as `pools.shared.budgets.tokens.tz`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn werr(field: &str, problem: impl Into<String>) -> WindowError {
    WindowError { field: field.to_owned(), problem: problem.into() }
}

/// A rolling window: its length cut into equal buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rolling {
    bucket_ms: u64,
    buckets: u32,
}

impl Rolling {
    /// A window of `length` in `buckets` buckets; the length must be a whole
    /// number of milliseconds per bucket, at most 365 days.
    pub fn new(field: &str, length: Duration, buckets: u32) -> Result<Rolling, WindowError> {
        let ms = crate::time::duration_millis(length);
        if buckets == 0 || buckets > 10_000 {
            return Err(werr(field, format!("{buckets} buckets: use 1..=10000")));
        }
        if ms == 0 || length > crate::quantity::MAX_DURATION {
            return Err(werr(field, "a rolling window's length must be more than 0 and at most 365d"));
        }
        if ms % u64::from(buckets) != 0 {
            return Err(werr(field, format!("a window of {ms} ms does not split into {buckets} buckets of whole milliseconds")));
        }
        Ok(Rolling { bucket_ms: ms / u64::from(buckets), buckets })
    }

    /// The rolling window of a count's [`Window`] (`100k/min` is one minute in
    /// 60 buckets of one second; a second is 50 buckets of 20 ms).
    pub fn of(window: Window) -> Rolling {
        let length_ms = crate::time::duration_millis(window.duration());
        let buckets = if window == Window::Second { 50 } else { DEFAULT_BUCKETS };
        Rolling { bucket_ms: length_ms / u64::from(buckets), buckets }
    }

    /// The window's length.
    pub fn length(self) -> Duration {
        Duration::from_millis(self.bucket_ms * u64::from(self.buckets))
    }

    /// One bucket's width: how much later than an exact sliding window a
    /// spend may leave.
    pub fn bucket(self) -> Duration {
        Duration::from_millis(self.bucket_ms)
    }

    /// The number of buckets.
    pub fn buckets(self) -> u32 {
        self.buckets
    }

    /// The bucket an instant falls in.
    pub fn bucket_of(self, t: Time) -> u64 {
        t.as_millis() / self.bucket_ms
    }

    /// When a spend counted in bucket `b` leaves the window.
    pub fn leaves_at(self, b: u64) -> Time {
        Time::from_millis(b.saturating_add(u64::from(self.buckets) + 1).saturating_mul(self.bucket_ms))
    }
}

/// How often a calendar window resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    /// Every day at the stated time.
    Day,
    /// Every month on this day (1..=28) at the stated time.
    Month {
        /// The day of the month.
        day: u8,
    },
}

/// A calendar window: reset at a local time of day (or of a day of the
/// month) at a fixed UTC offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Calendar {
    period: Period,
    /// Minutes after local midnight, 0..1440.
    at_minute: u16,
    /// The local time's offset from UTC in minutes, -14h..=+14h.
    offset_minutes: i16,
}

/// The forms a calendar zone is accepted in, for errors and help.
pub const ZONE_FORMS: &str = "UTC, Z, +02:00, -05:30, +0100 (a fixed offset from UTC; IANA names such as Europe/Paris are not supported)";

impl Calendar {
    /// A calendar window resetting every `period` at `at` (`HH:MM`, local)
    /// in `zone` (a fixed UTC offset: [`ZONE_FORMS`]); `field` names where
    /// the text came from.
    pub fn parse(field: &str, period: Period, at: &str, zone: &str) -> Result<Calendar, WindowError> {
        let at_minute = parse_time_of_day(at)
            .ok_or_else(|| werr(&format!("{field}.at"), format!("{at:?} is not a time of day: use HH:MM, 00:00..23:59")))?;
        let offset_minutes = parse_zone(zone).ok_or_else(|| {
            let problem = if zone.contains('/') {
                format!("time zone {zone:?}: IANA zone names are not supported, give the fixed UTC offset in force (accepted forms: {ZONE_FORMS})")
            } else {
                format!("{zone:?} is not a UTC offset (accepted forms: {ZONE_FORMS})")
            };
            werr(&format!("{field}.tz"), problem)
        })?;
        Calendar::new(field, period, at_minute, offset_minutes)
    }

    /// A calendar window from its parts: minutes after local midnight
    /// (0..1440) and the offset from UTC in minutes (at most 14 hours either way).
    pub fn new(field: &str, period: Period, at_minute: u16, offset_minutes: i16) -> Result<Calendar, WindowError> {
        if at_minute >= 1440 {
            return Err(werr(field, format!("reset at minute {at_minute} of the day: use 0..1440")));
        }
        if offset_minutes.unsigned_abs() > 14 * 60 {
            return Err(werr(field, format!("UTC offset of {offset_minutes} minutes: use at most 14 hours either way")));
        }
        if let Period::Month { day } = period {
            if !(1..=28).contains(&day) {
                return Err(werr(field, format!("reset on day {day} of the month: use 1..=28 (every month has it)")));
            }
        }
        Ok(Calendar { period, at_minute, offset_minutes })
    }

    /// The period.
    pub fn period(self) -> Period {
        self.period
    }

    /// Minutes after local midnight of the reset.
    pub fn at_minute(self) -> u16 {
        self.at_minute
    }

    /// The offset from UTC in minutes.
    pub fn offset_minutes(self) -> i16 {
        self.offset_minutes
    }

    /// The period containing `t`: `(start, next reset)`, start <= t < next
    /// (start is clamped to the epoch).
    pub fn period_at(self, t: Time) -> (Time, Time) {
        let offset = i64::from(self.offset_minutes) * MINUTE_MS;
        let local = i64::try_from(t.as_millis()).unwrap_or(i64::MAX - DAY_MS * 62) + offset;
        let at = i64::from(self.at_minute) * MINUTE_MS;
        let (start, next) = match self.period {
            Period::Day => {
                let mut start = local.div_euclid(DAY_MS) * DAY_MS + at;
                if start > local {
                    start -= DAY_MS;
                }
                (start, start + DAY_MS)
            }
            Period::Month { day } => {
                let (y, m, _) = civil_from_days(local.div_euclid(DAY_MS));
                let reset = |y: i64, m: u32| days_from_civil(y, m, u32::from(day)) * DAY_MS + at;
                let this = reset(y, m);
                let (prev_y, prev_m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
                let (next_y, next_m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                if this > local { (reset(prev_y, prev_m), this) } else { (this, reset(next_y, next_m)) }
            }
        };
        let utc = |local: i64| Time::from_millis(u64::try_from(local - offset).unwrap_or(0));
        (utc(start), utc(next))
    }
}

fn parse_time_of_day(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn parse_zone(s: &str) -> Option<i16> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" || s.eq_ignore_ascii_case("gmt") {
        return Some(0);
    }
    let s = s.strip_prefix("UTC").unwrap_or(s);
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None if rest.len() <= 2 => (rest, "00"),
        None => return None,
    };
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i16, i16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h * 60 + m <= 14 * 60).then_some(sign * (h * 60 + m))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day counted from 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A budget's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowSpec {
    /// The spend of the last `length`.
    Rolling(Rolling),
    /// The spend since the last reset.
    Calendar(Calendar),
}

impl WindowSpec {
    /// The window's identity as stored beside its spend: a spend row of
    /// another window is not this window's (a window change starts clean).
    /// Its text is fixed (`rolling 60000ms/60`, `daily at 00:00 UTC+00:00`):
    /// stored spend is matched by it, so it must not follow changes of the
    /// human form ([`fmt::Display`]).
    pub fn key(&self) -> String {
        match self {
            WindowSpec::Rolling(r) => format!("rolling {}ms/{}", r.bucket_ms * u64::from(r.buckets), r.buckets),
            WindowSpec::Calendar(c) => c.to_string(),
        }
    }
}

/// The human form: `rolling 1m`, `rolling 1d in 24 buckets` (the bucket
/// count only when it is not the default of that length: 50 for one second,
/// else [`DEFAULT_BUCKETS`]), `daily at 00:00 UTC+00:00`,
/// `monthly on day 1 at 09:00 UTC-05:00`.
impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowSpec::Rolling(r) => {
                write!(f, "rolling {}", crate::quantity::format_duration(r.length()))?;
                let default = if r.length() == Window::Second.duration() { Rolling::of(Window::Second).buckets } else { DEFAULT_BUCKETS };
                if r.buckets != default {
                    write!(f, " in {} buckets", r.buckets)?;
                }
                Ok(())
            }
            WindowSpec::Calendar(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let off = self.offset_minutes.unsigned_abs();
        let at = format!("{:02}:{:02} UTC{sign}{:02}:{:02}", self.at_minute / 60, self.at_minute % 60, off / 60, off % 60);
        match self.period {
            Period::Day => write!(f, "daily at {at}"),
            Period::Month { day } => write!(f, "monthly on day {day} at {at}"),
        }
    }
}

/// The spend counted in one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Spend {
    Rolling {
        spec: Rolling,
        /// `buckets + 1` counters; bucket `b` lives in slot `b % len`.
        ring: Vec<u64>,
        /// The newest bucket the ring has been advanced to.
        head: u64,
        total: u64,
    },
    Calendar {
        spec: Calendar,
        start: Time,
        next: Time,
        spent: u64,
    },
}

impl Spend {
    pub(crate) fn new(spec: WindowSpec, now: Time) -> Spend {
        match spec {
            WindowSpec::Rolling(r) => Spend::Rolling { spec: r, ring: vec![0; r.buckets as usize + 1], head: r.bucket_of(now), total: 0 },
            WindowSpec::Calendar(c) => {
                let (start, next) = c.period_at(now);
                Spend::Calendar { spec: c, start, next, spent: 0 }
            }
        }
    }

    /// Move the window to `now` (a time before the last one seen counts as
    /// the last one).
    pub(crate) fn advance(&mut self, now: Time) {
        match self {
            Spend::Rolling { spec, ring, head, total } => {
                let b = spec.bucket_of(now);
                if b <= *head {
                    return;
                }
                let len = ring.len() as u64;
                if b - *head >= len {
                    ring.iter_mut().for_each(|x| *x = 0);
                    *total = 0;
                } else {
                    for i in *head + 1..=b {
                        let slot = &mut ring[(i % len) as usize];
                        *total = total.saturating_sub(*slot);
                        *slot = 0;
                    }
                }
                *head = b;
            }
            Spend::Calendar { spec, start, next, spent } => {
                if now >= *next {
                    (*start, *next) = spec.period_at(now);
                    *spent = 0;
                }
            }
        }
    }

    /// The spend counted at `now` (read only; at most the last advance).
    pub(crate) fn spent_at(&self, now: Time) -> u64 {
        match self {
            Spend::Rolling { spec, ring, head, total } => {
                let b = spec.bucket_of(now);
                if b <= *head {
                    return *total;
                }
                let n = u64::from(spec.buckets);
                let oldest = (b.saturating_sub(n)).max(head.saturating_sub(n));
                (oldest..=*head).fold(0u64, |sum, i| sum.saturating_add(ring[(i % ring.len() as u64) as usize]))
            }
            Spend::Calendar { next, spent, .. } => {
                if now >= *next {
                    0
                } else {
                    *spent
                }
            }
        }
    }

    /// Charge `amount` at the (advanced) current instant; returns the bucket
    /// it went to.
    pub(crate) fn charge(&mut self, amount: u64) -> u64 {
        match self {
            Spend::Rolling { ring, head, total, .. } => {
                let len = ring.len() as u64;
                let slot = &mut ring[(*head % len) as usize];
                *slot = slot.saturating_add(amount);
                *total = total.saturating_add(amount);
                *head
            }
            Spend::Calendar { start, spent, .. } => {
                *spent = spent.saturating_add(amount);
                start.as_millis()
            }
        }
    }

    /// Take back a charge made into `bucket` (when it is still counted).
    pub(crate) fn uncharge(&mut self, bucket: u64, amount: u64) {
        match self {
            Spend::Rolling { spec, ring, head, total } => {
                if bucket <= *head && *head - bucket <= u64::from(spec.buckets) {
                    let len = ring.len() as u64;
                    let slot = &mut ring[(bucket % len) as usize];
                    let taken = amount.min(*slot);
                    *slot -= taken;
                    *total = total.saturating_sub(taken);
                }
            }
            Spend::Calendar { start, spent, .. } => {
                if bucket == start.as_millis() {
                    *spent = spent.saturating_sub(amount);
                }
            }
        }
    }

    /// Add a stored spend of `bucket` (after [`Spend::advance`] to now):
    /// counted when the bucket is still in the window; a bucket after the
    /// current one (a clock that went back) counts as the current one.
    pub(crate) fn restore(&mut self, bucket: u64, amount: u64) -> bool {
        match self {
            Spend::Rolling { spec, ring, head, total } => {
                if bucket < head.saturating_sub(u64::from(spec.buckets)) {
                    return false;
                }
                let b = bucket.min(*head);
                let len = ring.len() as u64;
                let slot = &mut ring[(b % len) as usize];
                *slot = slot.saturating_add(amount);
                *total = total.saturating_add(amount);
                true
            }
            Spend::Calendar { start, spent, .. } => {
                if bucket != start.as_millis() {
                    return false;
                }
                *spent = spent.saturating_add(amount);
                true
            }
        }
    }

    /// The oldest bucket still counted (stored rows before it can go).
    pub(crate) fn keep_from(&self) -> u64 {
        match self {
            Spend::Rolling { spec, head, .. } => head.saturating_sub(u64::from(spec.buckets)),
            Spend::Calendar { start, .. } => start.as_millis(),
        }
    }

    /// The first time from `now` at which the counted spend is at most
    /// `target`, assuming nothing more is spent; `None` when that never
    /// comes from the window alone (it already is: the caller checks first).
    pub(crate) fn frees_to(&self, now: Time, target: u64) -> Option<Time> {
        match self {
            Spend::Rolling { spec, ring, head, .. } => {
                let n = u64::from(spec.buckets);
                let current = spec.bucket_of(now).max(*head);
                let mut left = self.spent_at(now);
                for b in current.saturating_sub(n)..=*head {
                    left = left.saturating_sub(ring[(b % ring.len() as u64) as usize]);
                    if left <= target {
                        return Some(spec.leaves_at(b));
                    }
                }
                None
            }
            Spend::Calendar { next, .. } => Some(*next),
        }
    }

    /// When the counted spend next drops: the reset of a calendar window,
    /// the leaving of the oldest counted bucket of a rolling one (`None`
    /// when nothing is counted).
    pub(crate) fn next_drop(&self, now: Time) -> Option<Time> {
        match self {
            Spend::Rolling { .. } => self.frees_to(now, self.spent_at(now).saturating_sub(1)).filter(|_| self.spent_at(now) > 0),
            Spend::Calendar { spec, next, .. } => Some(if now >= *next { spec.period_at(now).1 } else { *next }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T2024_01_31: u64 = 1_706_659_200_000; // 2024-01-31T00:00:00Z

    #[test]
    fn civil_dates_round_trip_over_four_centuries() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(T2024_01_31 as i64 / DAY_MS), (2024, 1, 31));
        assert_eq!(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28), 2, "2000 is a leap year");
        assert_eq!(days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28), 1, "2100 is not");
    }

    #[test]
    fn zones_and_times_parse_and_iana_names_are_refused_by_name() {
        assert_eq!(parse_zone("UTC"), Some(0));
        assert_eq!(parse_zone("+02:00"), Some(120));
        assert_eq!(parse_zone("-05:30"), Some(-330));
        assert_eq!(parse_zone("+0100"), Some(60));
        assert_eq!(parse_zone("UTC+3"), Some(180));
        assert_eq!(parse_zone("+15:00"), None);
        assert_eq!(parse_time_of_day("09:30"), Some(570));
        assert_eq!(parse_time_of_day("24:00"), None);
        let e = Calendar::parse("pools.p.budgets.usd", Period::Day, "00:00", "Europe/Paris").unwrap_err();
        assert_eq!(e.field, "pools.p.budgets.usd.tz");
        assert!(e.problem.contains("IANA zone names are not supported"), "{e}");
        let e = Calendar::parse("x", Period::Month { day: 31 }, "00:00", "UTC").unwrap_err();
        assert!(e.problem.contains("1..=28"), "{e}");
        assert!(Calendar::parse("x", Period::Day, "7h", "UTC").unwrap_err().to_string().starts_with("x.at: "));
    }

    #[test]
    fn windows_read_as_text_and_keep_their_stored_key() {
        let minute = WindowSpec::Rolling(Rolling::of(Window::Minute));
        assert_eq!(minute.to_string(), "rolling 1m");
        assert_eq!(WindowSpec::Rolling(Rolling::of(Window::Second)).to_string(), "rolling 1s");
        assert_eq!(WindowSpec::Rolling(Rolling::of(Window::Day)).to_string(), "rolling 1d");
        let coarse = WindowSpec::Rolling(Rolling::new("w", Duration::from_secs(86_400), 24).unwrap());
        assert_eq!(coarse.to_string(), "rolling 1d in 24 buckets");
        let odd = WindowSpec::Rolling(Rolling::new("w", Duration::from_secs(90), 60).unwrap());
        assert_eq!(odd.to_string(), "rolling 1m30s");
        // The keys are the texts spend was stored under before the human form existed.
        assert_eq!(minute.key(), "rolling 60000ms/60");
        assert_eq!(WindowSpec::Rolling(Rolling::of(Window::Second)).key(), "rolling 1000ms/50");
        assert_eq!(coarse.key(), "rolling 86400000ms/24");
        let monthly = WindowSpec::Calendar(Calendar::parse("w", Period::Month { day: 1 }, "09:00", "-05:00").unwrap());
        assert_eq!(monthly.to_string(), "monthly on day 1 at 09:00 UTC-05:00");
        assert_eq!(monthly.key(), "monthly on day 1 at 09:00 UTC-05:00");
        let daily = WindowSpec::Calendar(Calendar::parse("w", Period::Day, "00:00", "UTC").unwrap());
        assert_eq!((daily.to_string(), daily.key()), ("daily at 00:00 UTC+00:00".to_owned(), "daily at 00:00 UTC+00:00".to_owned()));
    }

    #[test]
    fn rolling_windows_need_whole_millisecond_buckets() {
        assert!(Rolling::new("w", Duration::from_secs(1), 60).is_err());
        let r = Rolling::new("w", Duration::from_secs(60), 60).unwrap();
        assert_eq!((r.bucket(), r.length()), (Duration::from_secs(1), Duration::from_secs(60)));
        assert_eq!(Rolling::of(Window::Second).bucket(), Duration::from_millis(20));
        assert_eq!(Rolling::of(Window::Day).bucket(), Duration::from_secs(1440));
    }
}
