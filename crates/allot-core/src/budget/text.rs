//! The text form of a budget, as the fleet file and the API write it.
//!
//! Short form (a string): a count in the resource's unit with an optional
//! rolling window, `"100k/min"`, `"5M/day"`; a bare count (`"500k"`) is per
//! minute, as for limits. Table form ([`BudgetText`]):
//!
//! | key | meaning |
//! |---|---|
//! | `hard` | required: the count (`"5M"`, or `"5M/day"` with a rolling window) |
//! | `soft` | optional: warn above this count, in the same window, at most `hard` |
//! | `per` | a rolling window: `s`, `min`, `h`, `day` (default `min`) |
//! | `calendar` | `day` or `month`: a calendar window instead, resetting at `at` |
//! | `day` | for `calendar = "month"`: the day of the month of the reset, 1..=28 (default 1) |
//! | `at` | the reset's local time, `HH:MM` (default `00:00`) |
//! | `tz` | the reset's UTC offset: `UTC`, `+02:00`, ... (default `UTC`; IANA names are refused, see [`super::window`]) |
//! | `on_expiry` | `charge` (default) or `release`: what an unsettled reservation's expiry does |
//!
//! `per` and `calendar` together, a window suffix with `calendar`, or soft
//! and hard in different windows are errors; every error names its field
//! and the accepted forms. [`BudgetText::from_spec`] and [`describe`] go
//! the other way, for output.

use super::{BudgetSpec, Calendar, Expiry, Period, Rolling, WindowSpec};
use crate::quantity::{self, Quantity, Window};
use crate::resource::{Resource, Unit};
use std::fmt::Write as _;

/// A budget's table form, as written (fields checked by [`parse_budget`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetText {
    /// The hard limit: a count, optionally with a rolling window (`"100k/min"`).
    pub hard: String,
    /// The soft limit, in the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<String>,
    /// A rolling window: `s`, `min`, `h`, `day`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// A calendar window: `day` or `month`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// For a monthly calendar window: the day of the reset, 1..=28.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
    /// For a calendar window: the reset's local time, `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// For a calendar window: the reset's UTC offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `charge` or `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<String>,
}

/// A budget's text that is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BudgetTextError {
    /// The field at fault, such as `pools.shared.usd_micros.tz`.
    pub field: String,
    /// What is wrong with it, and what is accepted.
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> BudgetTextError {
    BudgetTextError { field: field.to_owned(), problem: problem.into() }
}

/// The forms a budget is accepted in, for errors and help.
pub const BUDGET_FORMS: &str = "\"100k/min\", \"5M/day\", \"500k\" (per minute), or a table \
{ hard, soft?, per? = s|min|h|day, calendar? = day|month, day? = 1..28, at? = \"HH:MM\", tz? = \"UTC\"|\"+02:00\", on_expiry? = charge|release }";

const WINDOWS: &str = "s, min, h or day";

/// The short form `"100k/min"` (rolling; a bare count is per minute) of a
/// budget on `resource`; `field` names where it came from.
pub fn parse_budget_str(field: &str, resource: &Resource, s: &str) -> Result<BudgetSpec, BudgetTextError> {
    parse(field, field, resource, &BudgetText { hard: s.to_owned(), ..BudgetText::default() })
}

/// The table form of a budget on `resource`; `field` names the budget
/// (`pools.shared.usd_micros`), errors name the key at fault under it.
pub fn parse_budget(field: &str, resource: &Resource, text: &BudgetText) -> Result<BudgetSpec, BudgetTextError> {
    parse(field, &format!("{field}.hard"), resource, text)
}

/// A count with the window it was written with, if any.
fn count(field: &str, text: &str) -> Result<(u64, Option<Window>), BudgetTextError> {
    let q = quantity::parse(field, Unit::CountPerWindow, text).map_err(|e| {
        let msg = e.to_string();
        err(field, msg.strip_prefix(&format!("{field}: ")).unwrap_or(&msg))
    })?;
    Ok((q.value, if text.contains('/') { q.window } else { None }))
}

fn window(field: &str, text: &str) -> Result<Window, BudgetTextError> {
    Window::parse(text.trim()).ok_or_else(|| err(field, format!("unknown window {text:?}: use {WINDOWS}")))
}

fn parse(field: &str, hard_field: &str, resource: &Resource, t: &BudgetText) -> Result<BudgetSpec, BudgetTextError> {
    if !resource.is_custom() {
        return Err(err(field, format!("budgets are for custom resources (tokens, usd_micros, ...), not {resource}")));
    }
    let (hard, hard_w) = count(hard_field, &t.hard)?;
    if hard == 0 {
        return Err(err(hard_field, "must be greater than 0"));
    }
    let soft_field = format!("{field}.soft");
    let (soft, soft_w) = match &t.soft {
        Some(s) => {
            let (v, w) = count(&soft_field, s)?;
            (Some(v), w)
        }
        None => (None, None),
    };
    if let Some(s) = soft.filter(|s| *s > hard) {
        return Err(err(&soft_field, format!("soft ({s}) must not exceed hard ({hard})")));
    }
    if let (Some(s), Some(h)) = (soft_w, hard_w) {
        if s != h {
            return Err(err(&soft_field, format!("soft is per {s} and hard per {h}: a budget has one window")));
        }
    }
    let per = t.per.as_deref().map(|p| window(&format!("{field}.per"), p)).transpose()?;
    let suffix = hard_w.map(|w| (w, hard_field)).or(soft_w.map(|w| (w, soft_field.as_str())));
    let on_expiry = match &t.on_expiry {
        Some(e) => {
            e.parse::<Expiry>().map_err(|_| err(&format!("{field}.on_expiry"), format!("unknown {e:?}: expected charge or release")))?
        }
        None => Expiry::Charge,
    };
    let window = match &t.calendar {
        None => {
            for (key, given) in [("day", t.day.is_some()), ("at", t.at.is_some()), ("tz", t.tz.is_some())] {
                if given {
                    return Err(err(&format!("{field}.{key}"), "only for a calendar window (calendar = \"day\" or \"month\")"));
                }
            }
            if let (Some(p), Some((w, f))) = (per, suffix) {
                if p != w {
                    return Err(err(f, format!("per {w} here but per = \"{p}\": a budget has one window")));
                }
            }
            WindowSpec::Rolling(Rolling::of(per.or(suffix.map(|(w, _)| w)).unwrap_or(Window::Minute)))
        }
        Some(c) => {
            let cf = format!("{field}.calendar");
            if per.is_some() {
                return Err(err(&cf, "give per (a rolling window) or calendar (a calendar window), not both"));
            }
            if let Some((w, f)) = suffix {
                return Err(err(f, format!("a window suffix (/{w}) with calendar: write the count alone, the calendar is the window")));
            }
            let period = match c.as_str() {
                "day" => {
                    if t.day.is_some() {
                        return Err(err(&format!("{field}.day"), "only for calendar = \"month\" (a daily window resets every day)"));
                    }
                    Period::Day
                }
                "month" => {
                    let day = t.day.unwrap_or(1);
                    if !(1..=28).contains(&day) {
                        return Err(err(&format!("{field}.day"), format!("day {day} of the month: use 1..=28 (every month has it)")));
                    }
                    Period::Month { day }
                }
                other => return Err(err(&cf, format!("unknown calendar {other:?}: expected day or month"))),
            };
            let cal = Calendar::parse(field, period, t.at.as_deref().unwrap_or("00:00"), t.tz.as_deref().unwrap_or("UTC"))
                .map_err(|e| err(&e.field, e.problem))?;
            WindowSpec::Calendar(cal)
        }
    };
    Ok(BudgetSpec { hard, soft, window, on_expiry })
}

/// The count window of a rolling window written `per = ...`, if it is one.
fn rolling_window(r: Rolling) -> Option<Window> {
    [Window::Second, Window::Minute, Window::Hour, Window::Day].into_iter().find(|w| Rolling::of(*w) == r)
}

fn count_text(v: u64) -> String {
    quantity::format(Unit::Count, Quantity::new(v))
}

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn zone(offset: i16) -> String {
    if offset == 0 {
        return "UTC".into();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    format!("{sign}{}", hhmm(offset.unsigned_abs()))
}

impl BudgetText {
    /// The table form of `spec`, which [`parse_budget`] reads back to it;
    /// `None` for a rolling window that is not one of `s`, `min`, `h`, `day`
    /// in its usual buckets (made through the API, not written in text).
    pub fn from_spec(spec: &BudgetSpec) -> Option<BudgetText> {
        let mut t = BudgetText {
            hard: count_text(spec.hard),
            soft: spec.soft.map(count_text),
            on_expiry: (spec.on_expiry != Expiry::Charge).then(|| spec.on_expiry.name().to_owned()),
            ..BudgetText::default()
        };
        match spec.window {
            WindowSpec::Rolling(r) => t.per = Some(rolling_window(r)?.suffix().to_owned()),
            WindowSpec::Calendar(c) => {
                t.calendar = Some(
                    match c.period() {
                        Period::Day => "day",
                        Period::Month { day } => {
                            t.day = Some(day);
                            "month"
                        }
                    }
                    .to_owned(),
                );
                t.at = Some(hhmm(c.at_minute()));
                t.tz = Some(zone(c.offset_minutes()));
            }
        }
        Some(t)
    }
}

/// A budget in one line for people: `100k/min (soft 80k)`, `50M per month
/// from day 1 at 00:00 UTC`; how an expiry ends is added when it releases.
pub fn describe(spec: &BudgetSpec) -> String {
    let mut out = match spec.window {
        WindowSpec::Rolling(r) => match rolling_window(r) {
            Some(w) => format!("{}/{w}", count_text(spec.hard)),
            None => format!("{} per rolling {}", count_text(spec.hard), quantity::format_duration(r.length())),
        },
        WindowSpec::Calendar(c) => {
            let (at, tz) = (hhmm(c.at_minute()), zone(c.offset_minutes()));
            match c.period() {
                Period::Day => format!("{} per day from {at} {tz}", count_text(spec.hard)),
                Period::Month { day } => format!("{} per month from day {day} at {at} {tz}", count_text(spec.hard)),
            }
        }
    };
    if let Some(s) = spec.soft {
        let _ = write!(out, " (soft {})", count_text(s));
    }
    if spec.on_expiry == Expiry::Release {
        out.push_str(", expiries released");
    }
    out
}

/// Serde for a map of budgets by resource in the table form (for types that
/// derive serde and hold budgets, such as [`crate::group::QuotaGroup`]):
/// `{"tokens": {"hard": "5M", "per": "day"}}`; the short form is read too.
pub mod serde_budgets {
    use super::{BudgetText, parse_budget, parse_budget_str};
    use crate::budget::BudgetSpec;
    use crate::resource::Resource;
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Short(String),
        Table(BudgetText),
    }

    /// Write each budget's table form.
    pub fn serialize<S: Serializer>(budgets: &BTreeMap<Resource, BudgetSpec>, s: S) -> Result<S::Ok, S::Error> {
        let mut out = BTreeMap::new();
        for (r, b) in budgets {
            let t =
                BudgetText::from_spec(b).ok_or_else(|| S::Error::custom(format!("budget on {r}: its rolling window has no text form")))?;
            out.insert(r.name().to_owned(), t);
        }
        out.serialize(s)
    }

    /// Read each budget, checked as [`parse_budget`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Resource, BudgetSpec>, D::Error> {
        let raw = BTreeMap::<String, Form>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, form) in raw {
            let r: Resource = name.parse().map_err(D::Error::custom)?;
            let spec = match form {
                Form::Short(s) => parse_budget_str(&format!("budgets.{name}"), &r, &s),
                Form::Table(t) => parse_budget(&format!("budgets.{name}"), &r, &t),
            }
            .map_err(D::Error::custom)?;
            out.insert(r, spec);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tokens() -> Resource {
        Resource::Custom("tokens".into())
    }

    fn table(pairs: &[(&str, &str)]) -> BudgetText {
        let mut t = BudgetText::default();
        for (k, v) in pairs {
            let v = (*v).to_owned();
            match *k {
                "hard" => t.hard = v,
                "soft" => t.soft = Some(v),
                "per" => t.per = Some(v),
                "calendar" => t.calendar = Some(v),
                "day" => t.day = Some(v.parse().unwrap()),
                "at" => t.at = Some(v),
                "tz" => t.tz = Some(v),
                "on_expiry" => t.on_expiry = Some(v),
                other => panic!("no key {other}"),
            }
        }
        t
    }

    fn good(pairs: &[(&str, &str)]) -> BudgetSpec {
        parse_budget("b.tokens", &tokens(), &table(pairs)).unwrap()
    }

    /// The error of a bad table: (field, problem).
    fn bad(pairs: &[(&str, &str)]) -> (String, String) {
        let e = parse_budget("b.tokens", &tokens(), &table(pairs)).unwrap_err();
        (e.field, e.problem)
    }

    fn cal(period: Period, at: &str, tz: &str) -> WindowSpec {
        WindowSpec::Calendar(Calendar::parse("x", period, at, tz).unwrap())
    }

    #[test]
    fn the_short_form_is_a_rolling_budget_per_minute_unless_it_says() {
        assert_eq!(parse_budget_str("f", &tokens(), "100k/min").unwrap(), BudgetSpec::rolling(100_000, Window::Minute));
        assert_eq!(parse_budget_str("f", &tokens(), "5M/day").unwrap(), BudgetSpec::rolling(5_000_000, Window::Day));
        assert_eq!(parse_budget_str("f", &tokens(), "10/s").unwrap(), BudgetSpec::rolling(10, Window::Second));
        assert_eq!(parse_budget_str("f", &tokens(), "500k").unwrap(), BudgetSpec::rolling(500_000, Window::Minute));
        let spec = parse_budget_str("f", &tokens(), "300/h").unwrap();
        assert_eq!(spec.window, WindowSpec::Rolling(Rolling::of(Window::Hour)));
        assert_eq!((spec.soft, spec.on_expiry), (None, Expiry::Charge));
    }

    #[test]
    fn short_form_errors_name_the_field_itself_and_the_accepted_forms() {
        let e = parse_budget_str("groups.llm.totals.tokens", &tokens(), "5M/week").unwrap_err();
        assert_eq!(e.field, "groups.llm.totals.tokens");
        assert!(e.problem.contains("unknown window \"week\"") && e.problem.contains("accepted forms: 100k/min"), "{e}");
        let e = parse_budget_str("f", &tokens(), "lots").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: \"lots\" is not a valid count per window: it does not start with a number (accepted forms: 100k/min, 5M/day, 10/s, 300/h, 1000 (per minute))"
        );
        assert_eq!(parse_budget_str("f", &tokens(), "0/min").unwrap_err().to_string(), "f: must be greater than 0");
        assert!(parse_budget_str("f", &tokens(), "-5").unwrap_err().problem.contains("negative"));
    }

    #[test]
    fn budgets_are_for_custom_resources_only() {
        let e = parse_budget_str("pools.p.memory", &Resource::Memory, "1G").unwrap_err();
        assert_eq!(e.field, "pools.p.memory");
        assert!(e.problem.contains("custom resources") && e.problem.contains("not memory"), "{e}");
        assert!(parse_budget("f", &Resource::Cpu, &table(&[("hard", "1")])).is_err());
    }

    #[test]
    fn a_table_gives_a_rolling_window_by_per_or_by_suffix() {
        assert_eq!(good(&[("hard", "5M"), ("per", "day")]), BudgetSpec::rolling(5_000_000, Window::Day));
        assert_eq!(good(&[("hard", "5M/day")]), BudgetSpec::rolling(5_000_000, Window::Day));
        assert_eq!(good(&[("hard", "5M/day"), ("per", "day")]), BudgetSpec::rolling(5_000_000, Window::Day), "the same window twice");
        assert_eq!(good(&[("hard", "5M"), ("per", "hour")]).window, WindowSpec::Rolling(Rolling::of(Window::Hour)), "what Window accepts");
        assert_eq!(good(&[("hard", "5M")]), BudgetSpec::rolling(5_000_000, Window::Minute), "per minute by default");
        let spec = good(&[("hard", "100k/min"), ("soft", "80k/min")]);
        assert_eq!((spec.hard, spec.soft, spec.window), (100_000, Some(80_000), WindowSpec::Rolling(Rolling::of(Window::Minute))));
        let spec = good(&[("hard", "100k"), ("soft", "80k/h")]);
        assert_eq!((spec.soft, spec.window), (Some(80_000), WindowSpec::Rolling(Rolling::of(Window::Hour))), "soft's suffix is the window");
        assert_eq!(good(&[("hard", "100k"), ("soft", "100k")]).soft, Some(100_000), "soft may equal hard");
    }

    #[test]
    fn rolling_window_errors_name_the_key() {
        assert_eq!(
            bad(&[("hard", "100k/day"), ("soft", "80k/min")]),
            ("b.tokens.soft".into(), "soft is per min and hard per day: a budget has one window".into())
        );
        assert_eq!(
            bad(&[("hard", "5M"), ("per", "week")]),
            ("b.tokens.per".into(), "unknown window \"week\": use s, min, h or day".into())
        );
        assert_eq!(
            bad(&[("hard", "5M/min"), ("per", "day")]),
            ("b.tokens.hard".into(), "per min here but per = \"day\": a budget has one window".into())
        );
        assert_eq!(bad(&[("hard", "5M"), ("soft", "1M/h"), ("per", "day")]).0, "b.tokens.soft");
        assert_eq!(bad(&[("hard", "100"), ("soft", "101")]), ("b.tokens.soft".into(), "soft (101) must not exceed hard (100)".into()));
        assert_eq!(bad(&[("hard", "0")]), ("b.tokens.hard".into(), "must be greater than 0".into()));
        let (f, p) = bad(&[("hard", "5X")]);
        assert_eq!(f, "b.tokens.hard");
        assert!(p.contains("unknown unit \"X\"") && p.contains("accepted forms"), "{p}");
        let (f, p) = bad(&[("hard", "5"), ("soft", "x")]);
        assert_eq!(f, "b.tokens.soft");
        assert!(p.contains("accepted forms"), "{p}");
        for key in ["day", "at", "tz"] {
            let value = if key == "day" { "3" } else { "00:00" };
            let (f, p) = bad(&[("hard", "5M"), (key, value)]);
            assert_eq!(
                (f.as_str(), p.as_str()),
                (format!("b.tokens.{key}").as_str(), "only for a calendar window (calendar = \"day\" or \"month\")")
            );
        }
    }

    #[test]
    fn a_calendar_window_resets_at_a_time_and_offset_by_default_midnight_utc_on_the_first() {
        let spec = good(&[("hard", "50M"), ("calendar", "month"), ("day", "1"), ("at", "00:00"), ("tz", "UTC")]);
        assert_eq!(
            spec,
            BudgetSpec { hard: 50_000_000, soft: None, window: cal(Period::Month { day: 1 }, "00:00", "UTC"), on_expiry: Expiry::Charge }
        );
        assert_eq!(good(&[("hard", "50M"), ("calendar", "month")]), spec, "day 1 at 00:00 UTC by default");
        assert_eq!(good(&[("hard", "1M"), ("calendar", "day")]).window, cal(Period::Day, "00:00", "UTC"));
        let spec = good(&[("hard", "1M"), ("soft", "900k"), ("calendar", "month"), ("day", "28"), ("at", "06:30"), ("tz", "+02:00")]);
        assert_eq!((spec.soft, spec.window), (Some(900_000), cal(Period::Month { day: 28 }, "06:30", "+02:00")));
        assert_eq!(good(&[("hard", "1M"), ("calendar", "day"), ("tz", "-05:30")]).window, cal(Period::Day, "00:00", "-05:30"));
    }

    #[test]
    fn calendar_errors_name_the_key_and_what_is_accepted() {
        assert_eq!(
            bad(&[("hard", "5M"), ("per", "day"), ("calendar", "month")]),
            ("b.tokens.calendar".into(), "give per (a rolling window) or calendar (a calendar window), not both".into())
        );
        assert_eq!(
            bad(&[("hard", "5M/day"), ("calendar", "month")]),
            ("b.tokens.hard".into(), "a window suffix (/day) with calendar: write the count alone, the calendar is the window".into())
        );
        assert_eq!(bad(&[("hard", "5M"), ("soft", "1M/day"), ("calendar", "day")]).0, "b.tokens.soft");
        assert_eq!(
            bad(&[("hard", "5M"), ("calendar", "week")]),
            ("b.tokens.calendar".into(), "unknown calendar \"week\": expected day or month".into())
        );
        for day in ["0", "29", "31"] {
            let (f, p) = bad(&[("hard", "5M"), ("calendar", "month"), ("day", day)]);
            assert_eq!((f.as_str(), p), ("b.tokens.day", format!("day {day} of the month: use 1..=28 (every month has it)")));
        }
        assert_eq!(bad(&[("hard", "5M"), ("calendar", "day"), ("day", "2")]).0, "b.tokens.day");
        let (f, p) = bad(&[("hard", "5M"), ("calendar", "day"), ("at", "25:00")]);
        assert_eq!(f, "b.tokens.at");
        assert!(p.contains("HH:MM"), "{p}");
        let (f, p) = bad(&[("hard", "5M"), ("calendar", "month"), ("tz", "Europe/Paris")]);
        assert_eq!(f, "b.tokens.tz");
        assert!(p.contains("IANA zone names are not supported") && p.contains("+02:00"), "{p}");
        let (f, p) = bad(&[("hard", "5M"), ("calendar", "month"), ("tz", "CEST")]);
        assert_eq!(f, "b.tokens.tz");
        assert!(p.contains("accepted forms"), "{p}");
    }

    #[test]
    fn on_expiry_charges_by_default_or_releases() {
        assert_eq!(good(&[("hard", "5M")]).on_expiry, Expiry::Charge);
        assert_eq!(good(&[("hard", "5M"), ("on_expiry", "charge")]).on_expiry, Expiry::Charge);
        assert_eq!(good(&[("hard", "5M"), ("on_expiry", "release")]).on_expiry, Expiry::Release);
        assert_eq!(
            bad(&[("hard", "5M"), ("on_expiry", "keep")]),
            ("b.tokens.on_expiry".into(), "unknown \"keep\": expected charge or release".into())
        );
    }

    #[test]
    fn the_table_form_is_read_from_json_refusing_unknown_keys() {
        let t: BudgetText = serde_json::from_str(r#"{"hard": "50M", "calendar": "month", "day": 1, "at": "00:00", "tz": "UTC"}"#).unwrap();
        assert_eq!(parse_budget("f", &tokens(), &t).unwrap().window, cal(Period::Month { day: 1 }, "00:00", "UTC"));
        let e = serde_json::from_str::<BudgetText>(r#"{"hard": "1", "window": "day"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `window`"), "{e}");
    }

    #[test]
    fn from_spec_reads_back_to_the_same_budget_and_describe_says_it_in_a_line() {
        let specs = [
            good(&[("hard", "5M/day")]),
            good(&[("hard", "100k/min"), ("soft", "80k/min"), ("on_expiry", "release")]),
            good(&[("hard", "10/s")]),
            good(&[("hard", "50M"), ("calendar", "month"), ("day", "15"), ("at", "06:30"), ("tz", "-05:30")]),
            good(&[("hard", "1M"), ("calendar", "day"), ("tz", "+01:00")]),
        ];
        for spec in &specs {
            let t = BudgetText::from_spec(spec).unwrap();
            assert_eq!(&parse_budget("f", &tokens(), &t).unwrap(), spec, "{t:?}");
        }
        let lines: Vec<String> = specs.iter().map(describe).collect();
        assert_eq!(
            lines,
            [
                "5M/day",
                "100k/min (soft 80k), expiries released",
                "10/s",
                "50M per month from day 15 at 06:30 -05:30",
                "1M per day from 00:00 +01:00",
            ]
        );
        let odd = BudgetSpec { window: WindowSpec::Rolling(Rolling::new("f", std::time::Duration::from_secs(90), 3).unwrap()), ..specs[0] };
        assert_eq!(BudgetText::from_spec(&odd), None);
        assert_eq!(describe(&odd), "5M per rolling 1m30s");
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "serde_budgets")]
        budgets: BTreeMap<Resource, BudgetSpec>,
    }

    #[test]
    fn serde_budgets_round_trips_and_checks_what_it_reads() {
        let h = Holder {
            budgets: [
                (tokens(), good(&[("hard", "5M/day")])),
                (Resource::Custom("usd_micros".into()), good(&[("hard", "50M"), ("calendar", "month")])),
            ]
            .into_iter()
            .collect(),
        };
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["budgets"]["tokens"], serde_json::json!({"hard": "5M", "per": "day"}));
        assert_eq!(serde_json::from_value::<Holder>(json).unwrap(), h);
        let short: Holder = serde_json::from_str(r#"{"budgets": {"tokens": "5M/day"}}"#).unwrap();
        assert_eq!(short.budgets[&tokens()], BudgetSpec::rolling(5_000_000, Window::Day));
        let e = serde_json::from_str::<Holder>(r#"{"budgets": {"memory": "5M/day"}}"#).unwrap_err();
        assert!(e.to_string().contains("budgets.memory: budgets are for custom resources"), "{e}");
    }
}
