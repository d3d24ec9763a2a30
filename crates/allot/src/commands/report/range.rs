//! A report's time range: RFC 3339 times or durations ago, errors naming the parameter.

use super::ReadError;

/// The time range of a report, in milliseconds since the Unix epoch, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// From.
    pub(crate) since_ms: u64,
    /// To.
    pub(crate) until_ms: u64,
}

impl Range {
    /// The range as text: `2026-12-03T10:00:00.000Z to 2026-12-03T12:00:00.000Z`.
    pub(super) fn describe(&self) -> String {
        let at = |ms| crate::governor::clock::rfc3339(allot_core::Time::from_millis(ms));
        format!("{} to {}", at(self.since_ms), at(self.until_ms))
    }
}

/// One end of a range: an RFC 3339 time (`2026-12-03T10:00:00Z`) or a
/// duration that long before `now_ms` (`2h`); an error names `field`.
fn instant(field: &str, text: &str, now_ms: u64) -> Result<u64, ReadError> {
    let t = text.trim();
    if t.contains('T') || t.contains(':') || t.matches('-').count() >= 2 {
        let st = humantime::parse_rfc3339_weak(t).map_err(|e| {
            ReadError::invalid(field, format!("{field} {t:?}: not an RFC 3339 time ({e}); write it in UTC, such as 2026-12-03T10:00:00Z"))
        })?;
        let ms = st.duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis);
        return Ok(ms);
    }
    let d = allot_core::quantity::parse_duration(field, t).map_err(|_| {
        ReadError::invalid(
            field,
            format!("{field} {t:?}: give a time (RFC 3339, such as 2026-12-03T10:00:00Z) or a duration ago (such as 2h, 30m)"),
        )
    })?;
    Ok(now_ms.saturating_sub(allot_core::time::duration_millis(d)))
}

/// The range from `since` to `until` (now when not given); each is a pair
/// (parameter name, text). The start must lie before the end.
pub(crate) fn range(since: (&str, &str), until: Option<(&str, &str)>, now_ms: u64) -> Result<Range, ReadError> {
    let since_ms = instant(since.0, since.1, now_ms)?;
    let until_ms = match until {
        Some((field, text)) => instant(field, text, now_ms)?,
        None => now_ms,
    };
    if since_ms >= until_ms {
        let (field, text) = until.unwrap_or((since.0, since.1));
        let at = |ms| crate::governor::clock::rfc3339(allot_core::Time::from_millis(ms));
        return Err(ReadError::invalid(
            field,
            format!("{field} {text:?}: the range is empty: it starts at {} and ends at {}", at(since_ms), at(until_ms)),
        ));
    }
    Ok(Range { since_ms, until_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::report::NOW;

    #[test]
    fn ranges_take_times_or_durations_and_errors_name_the_parameter() {
        let r = range(("--since", "2026-12-03T10:00:00Z"), Some(("--until", "2026-12-03T10:30:00Z")), NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 40 * 60_000, NOW - 10 * 60_000));
        let r = range(("since", "2h"), None, NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 7_200_000, NOW));
        let r = range(("since", "2026-12-03T09:40:00Z"), Some(("until", "30m")), NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 3_600_000, NOW - 1_800_000));
        for (since, until, field) in [
            ("yesterday", None, "--since"),
            ("2026-13-03T10:00:00Z", None, "--since"),
            ("2h", Some("soon"), "--until"),
            ("1h", Some("2h"), "--until"),
            ("2026-12-03T10:00:00Z", Some("2026-12-03T09:00:00Z"), "--until"),
        ] {
            match range(("--since", since), until.map(|u| ("--until", u)), NOW) {
                Err(ReadError::Invalid { field: f, message }) => {
                    assert_eq!(f, field, "{since} {until:?}: {message}");
                    assert!(message.starts_with(field), "{message}");
                }
                other => panic!("{since} {until:?}: {other:?}"),
            }
        }
    }
}
