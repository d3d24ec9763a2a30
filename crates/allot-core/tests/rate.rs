//! Counter rates: property tests for constant and linear counters and for
//! arbitrary inputs.

use allot_core::Time;
use allot_core::rate::{Rate, cpu_millicores};
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
        for t in ts {
            prop_assert_eq!(r.per_second(value, Time::from_millis(start + t)), Some(0));
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
                None => prop_assert_eq!(got, None),
                Some(p) => {
                    let dt = t - p;
                    let got = got.unwrap_or(u64::MAX);
                    // Each reading is off by less than one count: the rate by less than 1000/dt, plus one for the final division.
                    let tolerance = 1000 / dt + 1;
                    prop_assert!(got.abs_diff(slope) <= tolerance, "slope {} got {} over {} ms", slope, got, dt);
                }
            }
            prev = Some(t);
        }
    }

    #[test]
    fn cpu_millicores_are_cores_times_a_thousand(millicores in 0u64..1_000_000, ts in times()) {
        // millicores / 1000 cores busy = millicores * 1e6 ns of cpu time per second = millicores * 1000 ns per ms.
        let mut r = Rate::new();
        let mut first = true;
        for t in ts {
            let got = cpu_millicores(&mut r, millicores * 1000 * t, Time::from_millis(t));
            prop_assert_eq!(got, if first { None } else { Some(millicores) });
            first = false;
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
                Some((pv, pt)) if at > pt => {
                    let want = u128::from(value.saturating_sub(pv)) * 1000 / u128::from(at - pt);
                    prop_assert_eq!(got, Some(u64::try_from(want).unwrap_or(u64::MAX)));
                    if value <= pv {
                        prop_assert_eq!(got, Some(0), "a counter that went backwards counts as 0");
                    }
                }
                _ => prop_assert_eq!(got, None),
            }
            prop_assert_eq!(r.last(), Some((value, Time::from_millis(at))));
            last = Some((value, at));
        }
    }
}
