//! Fuzzing the core's text parsers, 100,000 cases each, run by `cargo test`:
//! quantities of every unit kind, durations, agent ids, resource, action and
//! window names. No input may panic; an accepted value reads back the same
//! from its formatted text; a refusal names its field.

#![allow(clippy::unwrap_used)]

use allot_core::limits::Action;
use allot_core::quantity::{self, MAX_DURATION, Quantity, Window};
use allot_core::{AgentId, Resource, Unit};
use proptest::prelude::*;
use std::time::Duration;

const CASES: u32 = 100_000;

/// 100,000 cases with the XorShift generator: ChaCha, the default, costs half the time of a case in a debug build.
fn config() -> ProptestConfig {
    ProptestConfig { rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift, ..ProptestConfig::with_cases(CASES) }
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![Just(Unit::Bytes), Just(Unit::Millicores), Just(Unit::Count), Just(Unit::BytesPerSecond), Just(Unit::CountPerWindow)]
}

/// Arbitrary text of up to `max` characters: printable ASCII, and any character (cheaper than a regex strategy).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![3 => (0x20u8..0x7f).prop_map(char::from), 1 => any::<char>()], 0..=max).prop_map(String::from_iter)
}

/// Text from the characters of agent ids and the separators of paths: short, or around the 128-character bound.
fn id_like() -> impl Strategy<Value = String> {
    let c = prop::sample::select("aZ09._:-/\\ \0é".chars().collect::<Vec<_>>());
    prop_oneof![
        prop::collection::vec(c.clone(), 0..8).prop_map(String::from_iter),
        prop::collection::vec(c, 120..136).prop_map(String::from_iter),
        text(16),
    ]
}

/// Pieces of number-like text: digits of any length, decimals, signs and separators, any character.
fn number_piece() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        (0u32..100_000, any::<u64>()).prop_map(|(a, b)| format!("{a}.{b}")),
        any::<u64>().prop_map(|b| format!(".{b}")),
        prop::sample::select(vec!["-", "+", " ", ".", "..", "e", "E", "_", ",", "\t", "\n", "0", ""]).prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ]
    .boxed()
}

/// Text that looks like a quantity: numbers, then pieces of every suffix, window and unit.
fn quantity_like() -> impl Strategy<Value = String> {
    const SUFFIXES: &[&str] = &[
        "k",
        "K",
        "M",
        "G",
        "T",
        "P",
        "Ki",
        "Mi",
        "Gi",
        "Ti",
        "Pi",
        "B",
        "iB",
        "KiB",
        "MB",
        "m",
        "%",
        "bit",
        "bit/s",
        "Mbit/s",
        "bps",
        "Gbps",
        "/s",
        "/",
        "s",
        "min",
        "/min",
        "h",
        "/h",
        "hr",
        "d",
        "day",
        "/day",
        "sec",
        "second",
        "minute",
        "hour",
        "/fortnight",
    ];
    let piece = prop_oneof![3 => number_piece(), 2 => prop::sample::select(SUFFIXES).prop_map(str::to_owned)];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Text that looks like a duration: numbers, units and their misspellings.
fn duration_like() -> impl Strategy<Value = String> {
    const UNITS: &[&str] = &["ms", "s", "m", "min", "h", "d", "us", "ns", "y", "w", "sec", "hours"];
    let piece = prop_oneof![3 => number_piece(), 2 => prop::sample::select(UNITS).prop_map(str::to_owned)];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn check_quantity(unit: Unit, text: &str) -> Result<(), TestCaseError> {
    match quantity::parse("limits.x.hard", unit, text) {
        Ok(q) => {
            let again = quantity::format(unit, q);
            prop_assert_eq!(quantity::parse("f", unit, &again).unwrap(), q, "{:?} -> {:?}", text, again);
            prop_assert_eq!(q.window.is_some(), unit == Unit::CountPerWindow);
            let _ = quantity::format_approx(unit, q.value);
        }
        Err(e) => prop_assert!(e.to_string().starts_with("limits.x.hard: "), "{}", e),
    }
    Ok(())
}

fn check_duration(text: &str) -> Result<(), TestCaseError> {
    match quantity::parse_duration("policy.delays.terminate", text) {
        Ok(d) => {
            prop_assert!(d <= MAX_DURATION, "{:?} -> {:?}", text, d);
            prop_assert_eq!(quantity::parse_duration("f", &quantity::format_duration(d)).unwrap(), d);
        }
        Err(e) => prop_assert!(e.to_string().starts_with("policy.delays.terminate: "), "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantities_of_every_unit_from_arbitrary_text(unit in unit(), text in text(24)) {
        check_quantity(unit, &text)?;
    }

    #[test]
    fn quantities_of_every_unit_from_quantity_like_text(unit in unit(), text in quantity_like()) {
        check_quantity(unit, &text)?;
    }

    #[test]
    fn quantities_of_every_unit_from_their_own_forms(
        unit in unit(),
        value in prop_oneof![0u64..10_000, any::<u64>(), (0u64..1 << 20).prop_map(|x| x << 20)],
        window in prop_oneof![Just(Window::Second), Just(Window::Minute), Just(Window::Hour), Just(Window::Day)],
        pad in "[ ]{0,2}",
    ) {
        let q = Quantity { value, window: (unit == Unit::CountPerWindow).then_some(window) };
        let text = format!("{pad}{}{pad}", quantity::format(unit, q));
        prop_assert_eq!(quantity::parse("f", unit, &text).unwrap(), q);
    }

    #[test]
    fn durations_from_arbitrary_text(text in text(24)) {
        check_duration(&text)?;
    }

    #[test]
    fn durations_from_duration_like_text(text in duration_like()) {
        check_duration(&text)?;
    }

    #[test]
    fn durations_of_any_length_are_parsed_or_refused_at_the_bound(ms in prop_oneof![any::<u64>(), 0..=2 * 31_536_000_000u64], plain in any::<bool>()) {
        let d = Duration::from_millis(ms);
        let text = if plain { (ms / 1000).to_string() } else { quantity::format_duration(d) };
        let parsed = quantity::parse_duration("f", &text);
        let expected = if plain { Duration::from_secs(ms / 1000) } else { d };
        if expected <= MAX_DURATION {
            prop_assert_eq!(parsed.unwrap(), expected);
        } else {
            prop_assert_eq!(parsed.unwrap_err().problem, "it is longer than the most allowed, 365d");
        }
    }

    #[test]
    fn agent_ids_from_arbitrary_text(text in id_like()) {
        match AgentId::new(text.clone()) {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), text.as_str());
                prop_assert!(!text.contains('/') && text != "." && text != ".." && !text.is_empty() && text.len() <= 128);
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<AgentId>(&json).unwrap(), id);
            }
            Err(e) => {
                let quoted = format!("{:?}", text);
                prop_assert!(e.to_string().starts_with(&format!("invalid agent id {quoted}")), "{}", e);
            }
        }
    }

    #[test]
    fn resource_action_and_window_names_from_arbitrary_text(text in prop_oneof![
        prop::collection::vec(prop::sample::select("az09_-A".chars().collect::<Vec<_>>()), 0..70).prop_map(String::from_iter),
        prop::sample::select(vec!["memory", "cpu", "processes", "files", "connections", "disk", "disk_io", "network", "warn", "throttle", "suspend", "terminate", "scale_down", "migrate", "custom", "s", "min", "h", "day"]).prop_map(str::to_owned),
        text(16),
    ]) {
        if let Ok(r) = text.parse::<Resource>() {
            prop_assert_eq!(r.name(), text.as_str());
            prop_assert_eq!(r.name().parse::<Resource>().unwrap(), r.clone());
            let _ = quantity::accepted_forms(r.unit());
        }
        if let Ok(a) = text.parse::<Action>() {
            prop_assert_eq!(a.to_string().parse::<Action>().unwrap(), a);
        }
        let _ = quantity::parse("f", Unit::CountPerWindow, &format!("1/{text}"));
    }
}
