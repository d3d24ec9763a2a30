//! Counter rates: property tests for constant and linear counters and for
//! arbitrary inputs; a rate is only ever computed over at least
//! `MIN_RATE_INTERVAL_MS`.

use allot_core::Time;
use allot_core::rate::{MIN_RATE_INTERVAL_MS, Rate, cpu_millicores};
use proptest::prelude::*;

/// Strictly increasing times in milliseconds.
fn times() -> impl Strategy<Value = Vec<u64>> {
    (0u64..1_000_000_000, prop::collection::vec(1u64..100_000, 1..30)).prop_map(|(start, gaps)| {
        gaps.iter()
            .scan(start, |t, g| {
                *t += g;
                Some(*t)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_constant_counter_has_rate_zero(value: u64, start in 0u64..1_000_000, ts in times()) {
        let mut r = Rate::new();
        prop_assert_eq!(r.per_second(value, Time::from_millis(start)), None);
        let mut base = start;
        for t in ts {
            let got = r.per_second(value, Time::from_millis(start + t));
            if start + t - base >= MIN_RATE_INTERVAL_MS {
                prop_assert_eq!(got, Some(0));
                base = start + t;
            } else {
                prop_assert_eq!(got, None);
            }
        }
    }

    #[test]
    fn a_linear_counter_gives_its_slope(slope in 0u64..1_000_000_000_000, v0 in 0u64..1_000_000, ts in times()) {
        // value(t) = v0 + floor(slope * t / 1000): `slope` per second, rounded down to whole counts.
        let value = |t: u64| v0 + (u128::from(slope) * u128::from(t) / 1000) as u64;
        let mut r = Rate::new();
        let mut prev: Option<u64> = None;
        for t in ts {
            let got = r.per_second(value(t), Time::from_millis(t));
            match prev {
                None => {
                    prop_assert_eq!(got, None);
                    prev = Some(t);
                }
                Some(p) if t - p < MIN_RATE_INTERVAL_MS => prop_assert_eq!(got, None, "{} ms is too short", t - p),
                Some(p) => {
                    let dt = t - p;
                    let got = got.unwrap_or(u64::MAX);
                    // Each reading is off by less than one count: the rate by less than 1000/dt, plus one for the final division.
                    let tolerance = 1000 / dt + 1;
                    prop_assert!(got.abs_diff(slope) <= tolerance, "slope {} got {} over {} ms", slope, got, dt);
                    prev = Some(t);
                }
            }
        }
    }

    #[test]
    fn cpu_millicores_are_cores_times_a_thousand(millicores in 0u64..1_000_000, ts in times()) {
        // millicores / 1000 cores busy = millicores * 1e6 ns of cpu time per second = millicores * 1000 ns per ms.
        let mut r = Rate::new();
        let mut base: Option<u64> = None;
        for t in ts {
            let got = cpu_millicores(&mut r, millicores * 1000 * t, Time::from_millis(t));
            match base {
                Some(b) if t - b < MIN_RATE_INTERVAL_MS => prop_assert_eq!(got, None),
                Some(_) => prop_assert_eq!(got, Some(millicores)),
                None => prop_assert_eq!(got, None),
            }
            if base.is_none_or(|b| t - b >= MIN_RATE_INTERVAL_MS) {
                base = Some(t);
            }
        }
    }

    #[test]
    fn never_panics_and_follows_the_rules(steps in prop::collection::vec((any::<u64>(), any::<u64>()), 0..40)) {
        let mut r = Rate::new();
        let mut cpu = Rate::new();
        let mut last: Option<(u64, u64)> = None;
        for (value, at) in steps {
            let got = r.per_second(value, Time::from_millis(at));
            prop_assert_eq!(cpu_millicores(&mut cpu, value, Time::from_millis(at)), got.map(|ns| ns / 1_000_000));
            match last {
                Some((pv, pt)) if at >= pt + MIN_RATE_INTERVAL_MS => {
                    let want = u128::from(value.saturating_sub(pv)) * 1000 / u128::from(at - pt);
                    prop_assert_eq!(got, Some(u64::try_from(want).unwrap_or(u64::MAX)));
                    if value <= pv {
                        prop_assert_eq!(got, Some(0), "a counter that went backwards counts as 0");
                    }
                    last = Some((value, at));
                }
                // Too soon after the base: no rate, the base stays.
                Some((pv, pt)) if at >= pt => {
                    prop_assert_eq!(got, None);
                    prop_assert_eq!(r.last(), Some((pv, Time::from_millis(pt))));
                }
                // The first value, or the time went backwards: measured from here on.
                _ => {
                    prop_assert_eq!(got, None);
                    last = Some((value, at));
                }
            }
            prop_assert_eq!(r.last(), last.map(|(v, t)| (v, Time::from_millis(t))));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn short_follow_ups_never_give_a_rate_nor_move_the_base(
        steps in prop::collection::vec((0u64..MIN_RATE_INTERVAL_MS, 0u64..100_000_000), 1..20),
        rest in 0u64..1_000_000_000,
    ) {
        // A tick, then follow-up readings less than the minimum after it whose
        // counter jumps arbitrarily (scheduler steps), then the next tick a
        // second after the first: its rate is the whole second's.
        let mut r = Rate::new();
        prop_assert_eq!(r.per_second(0, Time::from_millis(10_000)), None);
        let mut counter = 0u64;
        for (dt, jump) in steps {
            counter += jump;
            prop_assert_eq!(r.per_second(counter, Time::from_millis(10_000 + dt)), None, "{} ms after the base", dt);
        }
        prop_assert_eq!(r.per_second(counter + rest, Time::from_millis(11_000)), Some(counter + rest));
    }
}
