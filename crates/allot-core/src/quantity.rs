//! Quantities in human units: parsing and exact formatting (SPEC section 2).
//!
//! Every resource is counted internally in one integer unit ([`Unit`]). Input
//! accepts the forms people write (`512Mi`, `1G`, `250m`, `0.5`, `25%`,
//! `100Mbit/s`, `10MB/s`, `100k/min`); output is the shortest exact form, so
//! `parse(format(x)) == x` for every value. Fractions finer than the internal
//! unit are rounded up, as Kubernetes does for its quantities.

use crate::resource::Unit;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The time window a custom count is measured over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Per second.
    Second,
    /// Per minute (the default).
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl Window {
    /// The window's length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
        })
    }

    /// The suffix written after the slash.
    pub fn suffix(self) -> &'static str {
        match self {
            Window::Second => "s",
            Window::Minute => "min",
            Window::Hour => "h",
            Window::Day => "day",
        }
    }

    /// `count` per this window as a count per `to`, in integer arithmetic,
    /// rounded up to a whole count as every quantity is (`400/h` is `7/min`,
    /// `10/s` is `600/min`); `None` when it exceeds the internal range.
    pub fn convert(self, count: u64, to: Window) -> Option<u64> {
        let (from, to) = (u128::from(self.duration().as_secs()), u128::from(to.duration().as_secs()));
        u64::try_from((u128::from(count) * to).div_ceil(from)).ok()
    }

    pub(crate) fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "s" | "sec" | "second" => Window::Second,
            "min" | "minute" => Window::Minute,
            "h" | "hr" | "hour" => Window::Hour,
            "d" | "day" => Window::Day,
            _ => return None,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// A parsed quantity: a value in the internal unit, and for custom counts
/// the window it is counted over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quantity {
    /// The value in the internal unit of its resource.
    pub value: u64,
    /// The window, for [`Unit::CountPerWindow`] only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<Window>,
}

impl Quantity {
    /// A quantity without a window.
    pub const fn new(value: u64) -> Self {
        Quantity { value, window: None }
    }
}

/// A quantity that does not parse, with the field it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {input:?} is not a valid {what}: {problem} (accepted forms: {accepted})")]
pub struct QuantityError {
    /// The field the text came from, such as `agents[2].limits.memory.hard`.
    pub field: String,
    /// The text as given.
    pub input: String,
    /// What kind of quantity was expected.
    pub what: &'static str,
    /// What is wrong with it.
    pub problem: String,
    /// The forms that would have been accepted.
    pub accepted: &'static str,
}

/// The accepted forms for a unit, as shown in error messages and help.
pub fn accepted_forms(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "512Mi, 1G, 1.5Gi, 1000000 (bytes; suffixes k M G T P and Ki Mi Gi Ti Pi, optional trailing B)",
        Unit::Millicores => "250m (millicores), 0.5 or 2 (cores), 25% (percent of one core)",
        Unit::Count => "20, 1000, 10k, 2M",
        Unit::BytesPerSecond => {
            "10MB/s, 512KiB/s, 100Mbit/s, 1Gbps, 1000 (bytes per second; k M G T with B/s or bit/s, Ki Mi Gi Ti with B/s)"
        }
        Unit::CountPerWindow => "100k/min, 5M/day, 10/s, 300/h, 1000 (per minute)",
    }
}

fn what(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "byte size",
        Unit::Millicores => "cpu quantity",
        Unit::Count => "count",
        Unit::BytesPerSecond => "byte rate",
        Unit::CountPerWindow => "count per window",
    }
}

/// A multiplier from the written unit to the internal unit: `num / den`.
type Ratio = (u128, u128);

const BYTE_SUFFIXES: &[(&str, Ratio)] = &[
    ("", (1, 1)),
    ("k", (1_000, 1)),
    ("K", (1_000, 1)),
    ("M", (1_000_000, 1)),
    ("G", (1_000_000_000, 1)),
    ("T", (1_000_000_000_000, 1)),
    ("P", (1_000_000_000_000_000, 1)),
    ("Ki", (1 << 10, 1)),
    ("Mi", (1 << 20, 1)),
    ("Gi", (1 << 30, 1)),
    ("Ti", (1 << 40, 1)),
    ("Pi", (1 << 50, 1)),
];

const COUNT_SUFFIXES: &[(&str, Ratio)] =
    &[("", (1, 1)), ("k", (1_000, 1)), ("K", (1_000, 1)), ("M", (1_000_000, 1)), ("G", (1_000_000_000, 1))];

const CPU_SUFFIXES: &[(&str, Ratio)] = &[("m", (1, 1)), ("", (1000, 1)), ("%", (10, 1))];

const BIT_PREFIXES: &[(&str, Ratio)] =
    &[("", (1, 8)), ("k", (1_000, 8)), ("K", (1_000, 8)), ("M", (1_000_000, 8)), ("G", (1_000_000_000, 8)), ("T", (1_000_000_000_000, 8))];

fn lookup(table: &[(&str, Ratio)], suffix: &str) -> Option<Ratio> {
    table.iter().find(|(s, _)| *s == suffix).map(|(_, r)| *r)
}

/// Parse `text` as a quantity of `unit`; `field` names where it came from.
pub fn parse(field: &str, unit: Unit, text: &str) -> Result<Quantity, QuantityError> {
    let err = |problem: String| QuantityError {
        field: field.to_owned(),
        input: text.to_owned(),
        what: what(unit),
        problem,
        accepted: accepted_forms(unit),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err("it is empty".into()));
    }
    let (body, window) = match unit {
        Unit::CountPerWindow => match trimmed.split_once('/') {
            Some((count, win)) => {
                let window =
                    Window::parse(win.trim()).ok_or_else(|| err(format!("unknown window {:?}: use s, min, h or day", win.trim())))?;
                (count.trim_end(), Some(window))
            }
            None => (trimmed, Some(Window::Minute)),
        },
        _ => (trimmed, None),
    };
    let num_end = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    let suffix = suffix.trim_start();
    if number.is_empty() {
        if body.starts_with('-') {
            return Err(err("it is negative".into()));
        }
        return Err(err("it does not start with a number".into()));
    }
    let (mantissa, scale) = parse_decimal(number).ok_or_else(|| err(format!("{number:?} is not a decimal number")))?;
    let ratio = match unit {
        Unit::Bytes => lookup(BYTE_SUFFIXES, suffix.strip_suffix('B').unwrap_or(suffix)),
        Unit::Count | Unit::CountPerWindow => lookup(COUNT_SUFFIXES, suffix),
        Unit::Millicores => lookup(CPU_SUFFIXES, suffix),
        Unit::BytesPerSecond => rate_suffix(suffix),
    }
    .ok_or_else(|| err(format!("unknown unit {suffix:?}")))?;
    let value = scale_up(mantissa, scale, ratio).ok_or_else(|| err("it is too large".into()))?;
    Ok(Quantity { value, window })
}

fn rate_suffix(suffix: &str) -> Option<Ratio> {
    if suffix.is_empty() {
        return Some((1, 1));
    }
    if let Some(prefix) = suffix.strip_suffix("bit/s").or_else(|| suffix.strip_suffix("bps")) {
        return lookup(BIT_PREFIXES, prefix);
    }
    let per_second = suffix.strip_suffix("/s")?;
    lookup(BYTE_SUFFIXES, per_second.strip_suffix('B').unwrap_or(per_second))
}

/// `digits[.digits]` as (mantissa, number of fractional digits).
fn parse_decimal(s: &str) -> Option<(u128, u32)> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 || int.len() > 30 {
        return None;
    }
    let mut mantissa: u128 = 0;
    for c in int.chars().chain(frac.chars()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(u128::from(c.to_digit(10)?))?;
    }
    Some((mantissa, frac.len() as u32))
}

/// ceil(mantissa / 10^scale * num / den), or `None` when it exceeds u64.
fn scale_up(mantissa: u128, scale: u32, (num, den): Ratio) -> Option<u64> {
    let numerator = mantissa.checked_mul(num)?;
    let denominator = 10u128.checked_pow(scale)?.checked_mul(den)?;
    u64::try_from(numerator.div_ceil(denominator)).ok()
}

/// The shortest exact text for `q`, which [`parse`] reads back to `q`.
pub fn format(unit: Unit, q: Quantity) -> String {
    let v = q.value;
    match unit {
        Unit::Bytes => format_bytes(v),
        Unit::Millicores if v % 1000 == 0 => (v / 1000).to_string(),
        Unit::Millicores => format!("{v}m"),
        Unit::Count => format_count(v),
        Unit::BytesPerSecond => format!("{}B/s", format_bytes(v)),
        Unit::CountPerWindow => {
            format!("{}/{}", format_count(v), q.window.unwrap_or(Window::Minute))
        }
    }
}

fn format_with(v: u64, table: &[(&str, Ratio)]) -> String {
    let mut best = v.to_string();
    if v == 0 {
        return best;
    }
    for (suffix, (num, _)) in table.iter().filter(|(s, _)| !s.is_empty() && *s != "K") {
        let n = u128::from(v);
        if n % num == 0 {
            let candidate = format!("{}{suffix}", n / num);
            if candidate.len() < best.len() {
                best = candidate;
            }
        }
    }
    best
}

fn format_bytes(v: u64) -> String {
    format_with(v, BYTE_SUFFIXES)
}

fn format_count(v: u64) -> String {
    format_with(v, COUNT_SUFFIXES)
}

/// A rounded human form for measured values, such as `52.4Mi` or `1.25` cores;
/// not meant to be parsed back exactly.
pub fn format_approx(unit: Unit, value: u64) -> String {
    fn scaled(v: u64, steps: &[(&str, f64)], tail: &str) -> String {
        for (suffix, size) in steps {
            if v as f64 >= *size {
                let x = v as f64 / size;
                let digits = if x >= 100.0 {
                    0
                } else if x >= 10.0 {
                    1
                } else {
                    2
                };
                return format!("{x:.digits$}{suffix}{tail}");
            }
        }
        format!("{v}{tail}")
    }
    const BIN: &[(&str, f64)] = &[("Ti", 1_099_511_627_776.0), ("Gi", 1_073_741_824.0), ("Mi", 1_048_576.0), ("Ki", 1024.0)];
    const DEC: &[(&str, f64)] = &[("G", 1e9), ("M", 1e6), ("k", 1e3)];
    match unit {
        Unit::Bytes => scaled(value, BIN, ""),
        Unit::BytesPerSecond => scaled(value, DEC, "B/s"),
        Unit::Millicores => format!("{value}m"),
        Unit::Count | Unit::CountPerWindow => scaled(value, DEC, ""),
    }
}

/// The accepted forms for durations.
pub const DURATION_FORMS: &str = "500ms, 30s, 5m, 1h, 1d, 1m30s, or a plain number of seconds; at most 365d";

/// The longest duration [`parse_duration`] accepts: 365 days. Every delay,
/// grace, deadline, window and interval is bounded by it, so deadlines
/// computed from them stay far inside every clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parse a duration such as `30s`, `5m`, `1h30m`, `250ms` or `45` (seconds),
/// at most [`MAX_DURATION`].
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, QuantityError> {
    let d = parse_unbounded_duration(field, text)?;
    if d > MAX_DURATION {
        return Err(QuantityError {
            field: field.to_owned(),
            input: text.to_owned(),
            what: "duration",
            problem: format!("it is longer than the most allowed, {}", format_duration(MAX_DURATION)),
            accepted: DURATION_FORMS,
        });
    }
    Ok(d)
}

fn parse_unbounded_duration(field: &str, text: &str) -> Result<Duration, QuantityError> {
    let err = |problem: String| QuantityError {
        field: field.to_owned(),
        input: text.to_owned(),
        what: "duration",
        problem,
        accepted: DURATION_FORMS,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err("it is empty".into()));
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = t;
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return Err(err(format!("expected a number at {rest:?}")));
        }
        let (mantissa, scale) =
            parse_decimal(&rest[..num_end]).ok_or_else(|| err(format!("{:?} is not a decimal number", &rest[..num_end])))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let ms: u128 = match &rest[..unit_end] {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(err("a number without a unit inside a compound duration".into()));
            }
            other => return Err(err(format!("unknown unit {other:?}"))),
        };
        rest = &rest[unit_end..];
        let part = scale_up(mantissa, scale, (ms, 1)).ok_or_else(|| err("it is too large".into()))?;
        total_ms = total_ms.saturating_add(u128::from(part));
    }
    let ms = u64::try_from(total_ms).map_err(|_| err("it is too large".into()))?;
    Ok(Duration::from_millis(ms))
}

/// The shortest text for a duration that [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = crate::time::duration_millis(d);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::duration_millis;
    use proptest::prelude::*;

    fn p(unit: Unit, s: &str) -> u64 {
        parse("f", unit, s).unwrap_or_else(|e| panic!("{e}")).value
    }

    #[test]
    fn bytes_accept_decimal_and_binary_suffixes() {
        assert_eq!(p(Unit::Bytes, "512Mi"), 512 << 20);
        assert_eq!(p(Unit::Bytes, "1G"), 1_000_000_000);
        assert_eq!(p(Unit::Bytes, "1GB"), 1_000_000_000);
        assert_eq!(p(Unit::Bytes, "1GiB"), 1 << 30);
        assert_eq!(p(Unit::Bytes, "1000000"), 1_000_000);
        assert_eq!(p(Unit::Bytes, "1.5Gi"), 3 << 29);
        assert_eq!(p(Unit::Bytes, " 64 Mi "), 64 << 20);
        assert_eq!(p(Unit::Bytes, "50M"), 50_000_000);
        assert_eq!(p(Unit::Bytes, "0.3Ki"), 308, "rounded up from 307.2");
    }

    #[test]
    fn cpu_accepts_millicores_cores_and_percent_of_one_core() {
        assert_eq!(p(Unit::Millicores, "250m"), 250);
        assert_eq!(p(Unit::Millicores, "0.5"), 500);
        assert_eq!(p(Unit::Millicores, "2"), 2000);
        assert_eq!(p(Unit::Millicores, "25%"), 250);
        assert_eq!(p(Unit::Millicores, "5%"), 50, "the sketch's cpu: 5 is 50m");
        assert_eq!(p(Unit::Millicores, "0.0001"), 1, "finer than 1m rounds up");
    }

    #[test]
    fn rates_accept_bytes_and_bits_per_second() {
        assert_eq!(p(Unit::BytesPerSecond, "100Mbit/s"), 12_500_000);
        assert_eq!(p(Unit::BytesPerSecond, "1Gbps"), 125_000_000);
        assert_eq!(p(Unit::BytesPerSecond, "10MB/s"), 10_000_000);
        assert_eq!(p(Unit::BytesPerSecond, "512KiB/s"), 512 * 1024);
        assert_eq!(p(Unit::BytesPerSecond, "4096"), 4096);
        assert_eq!(p(Unit::BytesPerSecond, "1bit/s"), 1, "an eighth of a byte rounds up");
    }

    #[test]
    fn counts_per_window_default_to_minutes() {
        assert_eq!(parse("f", Unit::CountPerWindow, "100k/min").unwrap(), Quantity { value: 100_000, window: Some(Window::Minute) });
        assert_eq!(parse("f", Unit::CountPerWindow, "5M/day").unwrap(), Quantity { value: 5_000_000, window: Some(Window::Day) });
        assert_eq!(parse("f", Unit::CountPerWindow, "300").unwrap(), Quantity { value: 300, window: Some(Window::Minute) });
        assert_eq!(p(Unit::Count, "10k"), 10_000);
    }

    #[test]
    fn counts_convert_between_windows_exactly_rounding_up() {
        assert_eq!(Window::Hour.convert(400, Window::Minute), Some(7), "6.67 per minute, rounded up");
        assert_eq!(Window::Hour.convert(360, Window::Minute), Some(6), "exact");
        assert_eq!(Window::Second.convert(10, Window::Minute), Some(600));
        assert_eq!(Window::Day.convert(2, Window::Minute), Some(1));
        assert_eq!(Window::Minute.convert(0, Window::Day), Some(0));
        assert_eq!(Window::Minute.convert(5, Window::Minute), Some(5));
        assert_eq!(Window::Second.convert(u64::MAX, Window::Day), None, "beyond the internal range");
        assert_eq!(Window::Day.convert(u64::MAX, Window::Second), Some(u64::MAX.div_ceil(86_400)));
    }

    #[test]
    fn errors_name_the_field_the_problem_and_the_accepted_forms() {
        let e = parse("agents[0].limits.memory.hard", Unit::Bytes, "12XB").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("agents[0].limits.memory.hard: \"12XB\" is not a valid byte size"), "{msg}");
        assert!(msg.contains("unknown unit \"XB\""), "{msg}");
        assert!(msg.contains("512Mi"), "{msg}");
        for (unit, bad, problem) in [
            (Unit::Bytes, "", "empty"),
            (Unit::Bytes, "-5M", "negative"),
            (Unit::Bytes, "Mi", "does not start with a number"),
            (Unit::Bytes, "1.2.3", "not a decimal number"),
            (Unit::Bytes, "99999999999999P", "too large"),
            (Unit::Millicores, "1core", "unknown unit"),
            (Unit::CountPerWindow, "5/fortnight", "unknown window"),
            (Unit::BytesPerSecond, "10MB", "unknown unit"),
        ] {
            let e = parse("x", unit, bad).unwrap_err();
            assert!(e.problem.contains(problem), "{bad:?}: {e}");
        }
    }

    #[test]
    fn formatting_picks_the_shortest_exact_form() {
        assert_eq!(format(Unit::Bytes, Quantity::new(512 << 20)), "512Mi");
        assert_eq!(format(Unit::Bytes, Quantity::new(50_000_000)), "50M");
        assert_eq!(format(Unit::Bytes, Quantity::new(12345)), "12345");
        assert_eq!(format(Unit::Millicores, Quantity::new(250)), "250m");
        assert_eq!(format(Unit::Millicores, Quantity::new(2000)), "2");
        assert_eq!(format(Unit::BytesPerSecond, Quantity::new(12_500_000)), "12500kB/s");
        assert_eq!(format(Unit::BytesPerSecond, Quantity::new(7)), "7B/s");
        assert_eq!(format(Unit::Count, Quantity::new(2000)), "2k");
        assert_eq!(format_approx(Unit::Bytes, 52_428_803), "50.0Mi");
    }

    fn unit_strategy() -> impl Strategy<Value = Unit> {
        prop_oneof![Just(Unit::Bytes), Just(Unit::Millicores), Just(Unit::Count), Just(Unit::BytesPerSecond), Just(Unit::CountPerWindow)]
    }

    fn window_strategy() -> impl Strategy<Value = Window> {
        prop_oneof![Just(Window::Second), Just(Window::Minute), Just(Window::Hour), Just(Window::Day)]
    }

    #[test]
    fn durations_are_bounded_and_the_error_names_the_bound() {
        let e = parse_duration("escalation_delay", "1000000000h").unwrap_err().to_string();
        assert!(
            e.starts_with("escalation_delay: \"1000000000h\" is not a valid duration: it is longer than the most allowed, 365d"),
            "{e}"
        );
        assert_eq!(parse_duration("f", "365d").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("f", "31536000").unwrap(), MAX_DURATION);
        assert!(parse_duration("f", "31536001").is_err());
        assert!(parse_duration("f", "364d24h1ms").is_err());
        assert!(parse_duration("f", &u64::MAX.to_string()).is_err());
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration("f", s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("45"), Duration::from_secs(45));
        for bad in ["", "s", "5 parsecs", "5x", "1m30"] {
            assert!(
                parse_duration("agents[0].burst_window", bad).unwrap_err().to_string().starts_with("agents[0].burst_window: "),
                "{bad}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    proptest! {
        #[test]
        fn durations_round_trip(ms in 0..=duration_millis(MAX_DURATION)) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration("f", &format_duration(d)).unwrap(), d);
        }

        #[test]
        fn durations_above_the_bound_are_refused_naming_it(ms in duration_millis(MAX_DURATION) + 1..) {
            let e = parse_duration("f", &format_duration(Duration::from_millis(ms))).unwrap_err();
            prop_assert_eq!(e.problem, "it is longer than the most allowed, 365d");
        }

        #[test]
        fn duration_parser_never_panics(text in "[0-9.]{0,12}[a-z ]{0,4}[0-9]{0,3}[a-z]{0,3}") {
            let _ = parse_duration("f", &text);
        }

        #[test]
        fn format_then_parse_round_trips(unit in unit_strategy(), value in prop_oneof![0u64..10_000, any::<u64>(), (0u64..1<<20).prop_map(|x| x << 20), (0u64..100_000).prop_map(|x| x * 1_000_000)], window in window_strategy()) {
            let q = Quantity { value, window: (unit == Unit::CountPerWindow).then_some(window) };
            let text = format(unit, q);
            prop_assert_eq!(parse("f", unit, &text).unwrap(), q, "via {}", text);
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_text(unit in unit_strategy(), text in ".{0,40}") {
            let _ = parse("f", unit, &text);
        }

        #[test]
        fn parsers_never_panic_on_number_like_text(unit in unit_strategy(), text in "[0-9.]{0,30}[kKMGTPimB%/sbitpdhn]{0,6}") {
            if let Err(e) = parse("field", unit, &text) {
                prop_assert!(e.to_string().starts_with("field: "));
            }
        }
    }
}
