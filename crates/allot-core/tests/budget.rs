//! Budgets under any interleaving of reserve, settle, release, expire,
//! usage reports, window changes and time passing, against a model kept by
//! the test (every charge with its time, windows computed independently):
//! when only reservations spend, spent + reserved never exceeds hard at any
//! level at any instant (0 overspend); spent + reserved + remaining = hard;
//! the ledger refuses exactly when the model says a level would go over;
//! spent matches the model's, so windows reset exactly when they should
//! (rolling buckets, calendar days and months of every length, at the stated
//! local time); a window change starts clean; an undone reserve or settle
//! (a store that could not record it) leaves the ledger as it was.
#![allow(clippy::unwrap_used)]

use allot_core::budget::{BudgetSpec, Budgets, Calendar, Expiry, Level, Period, Refusal, Rolling, WindowSpec};
use allot_core::quantity::Window;
use allot_core::{AgentId, Resource, Time};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

const DAY: u64 = 86_400_000;
/// 2024-01-31T23:00:00Z: a day, a month (of 29 days next) and a year boundary are near.
const START: u64 = 1_706_742_000_000;

fn tokens() -> Resource {
    Resource::Custom("tokens".into())
}

fn usd() -> Resource {
    Resource::Custom("usd_micros".into())
}

fn agent(i: usize) -> AgentId {
    AgentId::new(format!("a{i}")).unwrap()
}

/// An independent model of one budget's window.
#[derive(Clone, Debug)]
enum ModelWindow {
    /// Length and bucket width in ms: a charge at t leaves at (t / b + n + 1) * b.
    Rolling { bucket: u64, n: u64 },
    /// Daily at `at` ms after local midnight, local = UTC + offset.
    Daily { at: i64, offset: i64 },
}

impl ModelWindow {
    fn counts(&self, charged_at: u64, now: u64) -> bool {
        match *self {
            ModelWindow::Rolling { bucket, n } => now < (charged_at / bucket + n + 1) * bucket,
            ModelWindow::Daily { at, offset } => {
                let period_start = |t: u64| {
                    let local = t as i64 + offset - at;
                    t as i64 - local.rem_euclid(DAY as i64)
                };
                period_start(charged_at) == period_start(now)
            }
        }
    }

    fn spec(&self, hard: u64, on_expiry: Expiry) -> BudgetSpec {
        let window = match *self {
            ModelWindow::Rolling { bucket, n } => {
                WindowSpec::Rolling(Rolling::new("w", Duration::from_millis(bucket * n), n as u32).unwrap())
            }
            ModelWindow::Daily { at, offset } => {
                WindowSpec::Calendar(Calendar::new("w", Period::Day, (at / 60_000) as u16, (offset / 60_000) as i16).unwrap())
            }
        };
        BudgetSpec { hard, soft: None, window, on_expiry }
    }
}

#[derive(Clone, Debug)]
struct ModelBudget {
    hard: u64,
    window: ModelWindow,
    /// The other window a change switches to.
    other: ModelWindow,
    on_expiry: Expiry,
    charges: Vec<(u64, u64)>,
    reserved: u64,
}

impl ModelBudget {
    fn spent(&self, now: u64) -> u64 {
        self.charges.iter().filter(|(t, _)| self.window.counts(*t, now)).map(|(_, a)| a).sum()
    }
}

/// One level's hold of one resource: (level, resource, amount).
type ModelHold = (Level, Resource, u64);

struct Model {
    budgets: BTreeMap<(Level, Resource), ModelBudget>,
    /// Open reservations: id -> (expires, holds).
    open: BTreeMap<u64, (u64, Vec<ModelHold>)>,
}

/// a0: own tokens 400 per 10 s (10 buckets); all in group g: tokens 1000/min;
/// a1 and a2 draw on pool p: tokens 700 and usd 300 daily at 00:30 +01:00,
/// expiries released there.
fn setup() -> (Budgets, Model) {
    let now = Time::from_millis(START);
    let mut b = Budgets::new();
    b.set_agent(agent(0), Some("g".into()), vec![]);
    b.set_agent(agent(1), Some("g".into()), vec!["p".into()]);
    b.set_agent(agent(2), Some("g".into()), vec!["p".into()]);
    let daily = ModelWindow::Daily { at: 30 * 60_000, offset: 3_600_000 };
    let minute = ModelWindow::Rolling { bucket: 1000, n: 60 };
    let ten = ModelWindow::Rolling { bucket: 1000, n: 10 };
    let defs = [
        (Level::Agent(agent(0)), tokens(), 400, ten.clone(), minute.clone(), Expiry::Charge),
        (Level::Group("g".into()), tokens(), 1000, minute.clone(), daily.clone(), Expiry::Charge),
        (Level::Pool("p".into()), tokens(), 700, daily.clone(), ten.clone(), Expiry::Release),
        (Level::Pool("p".into()), usd(), 300, daily, minute, Expiry::Release),
    ];
    let mut budgets = BTreeMap::new();
    for (level, resource, hard, window, other, on_expiry) in defs {
        b.set_budget(level.clone(), resource.clone(), window.spec(hard, on_expiry), now).unwrap();
        budgets.insert((level, resource), ModelBudget { hard, window, other, on_expiry, charges: vec![], reserved: 0 });
    }
    (b, Model { budgets, open: BTreeMap::new() })
}

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        agent: usize,
        tokens: u64,
        usd: Option<u64>,
        ttl_ms: u64,
    },
    /// With `undo`, the settle is first undone (a store that could not
    /// record it) and must leave the ledger as it was, then done again.
    Settle {
        pick: usize,
        percent: u64,
        undo: bool,
    },
    Release {
        pick: usize,
    },
    Expire,
    Advance {
        ms: u64,
    },
    ChangeWindow {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..450u64, proptest::option::of(0..200u64), 1..40_000u64)
            .prop_map(|(agent, tokens, usd, ttl_ms)| Op::Reserve { agent, tokens, usd, ttl_ms }),
        4 => (any::<usize>(), 0..=100u64, any::<bool>()).prop_map(|(pick, percent, undo)| Op::Settle { pick, percent, undo }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => Just(Op::Expire),
        4 => prop_oneof![0..3_000u64, 0..70_000u64, Just(DAY / 3)].prop_map(|ms| Op::Advance { ms }),
        1 => (0..4usize).prop_map(|pick| Op::ChangeWindow { pick }),
    ]
}

fn levels_of(model: &Model, a: usize, r: &Resource) -> Vec<Level> {
    let mut out = vec![Level::Agent(agent(a)), Level::Group("g".into())];
    if a > 0 {
        out.push(Level::Pool("p".into()));
    }
    out.retain(|l| model.budgets.contains_key(&(l.clone(), r.clone())));
    out
}

fn check(b: &Budgets, model: &Model, now: u64) -> Result<(), TestCaseError> {
    let views = b.snapshot(Time::from_millis(now));
    prop_assert_eq!(views.len(), model.budgets.len());
    for v in views {
        let m = &model.budgets[&(v.level.clone(), v.resource.clone())];
        let at = format!("{} {} at +{} ms", v.level, v.resource, now - START);
        prop_assert!(v.spent + v.reserved <= v.hard, "overspent: {}: {:?}", at, v);
        prop_assert_eq!(v.spent + v.reserved + v.remaining, v.hard, "balance {}", at);
        prop_assert_eq!(v.reserved, m.reserved, "reserved {}", at);
        prop_assert_eq!(v.spent, m.spent(now), "spent {}", at);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn reservations_never_overspend_and_windows_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut b, mut model) = setup();
        let mut now = START;
        for op in ops {
            let t = Time::from_millis(now);
            match op {
                Op::Reserve { agent: a, tokens: tk, usd: us, ttl_ms } => {
                    let mut want = BTreeMap::from([(tokens(), tk)]);
                    if let Some(u) = us.filter(|_| a > 0) {
                        want.insert(usd(), u);
                    }
                    let fits = want.iter().all(|(r, amt)| {
                        levels_of(&model, a, r).iter().all(|l| {
                            let m = &model.budgets[&(l.clone(), r.clone())];
                            m.spent(now) + m.reserved + amt <= m.hard
                        })
                    });
                    let before = b.snapshot(t);
                    if let Ok(r) = b.reserve(&agent(a), &want, Duration::from_millis(ttl_ms), t) {
                        // A store that could not record it: undone, as if never made (its id stays used).
                        b.unreserve(&r);
                        prop_assert_eq!(b.snapshot(t), before, "an undone reservation leaves the ledger as it was");
                    }
                    match b.reserve(&agent(a), &want, Duration::from_millis(ttl_ms), t) {
                        Ok(r) => {
                            prop_assert!(fits, "reserved {:?} though a level had no room", want);
                            let mut holds = vec![];
                            for (res, amt) in &want {
                                for l in levels_of(&model, a, res) {
                                    model.budgets.get_mut(&(l.clone(), res.clone())).unwrap().reserved += amt;
                                    holds.push((l, res.clone(), *amt));
                                }
                            }
                            model.open.insert(r.id, (now + ttl_ms, holds));
                        }
                        Err(Refusal::Exhausted { level, resource, .. }) => {
                            prop_assert!(!fits, "refused at {} {} though every level had room", level, resource);
                        }
                        Err(e) => prop_assert!(false, "unexpected refusal {}", e),
                    }
                }
                Op::Settle { pick, percent, undo } => {
                    if model.open.is_empty() { continue; }
                    let id = *model.open.keys().nth(pick % model.open.len()).unwrap();
                    let (_, holds) = model.open.remove(&id).unwrap();
                    let mut actual = BTreeMap::new();
                    for (_, r, amt) in &holds {
                        actual.insert(r.clone(), amt * percent / 100);
                    }
                    if undo {
                        let before = b.snapshot(t);
                        let s = b.settle(id, &actual, t).unwrap();
                        b.unsettle(&s);
                        prop_assert_eq!(b.snapshot(t), before, "an undone settle leaves the ledger as it was");
                        prop_assert!(b.reservation(id).is_some());
                    }
                    let s = b.settle(id, &actual, t).unwrap();
                    prop_assert!(!s.overran() && s.over_limit.is_empty());
                    for (l, r, amt) in holds {
                        let m = model.budgets.get_mut(&(l, r.clone())).unwrap();
                        m.reserved -= amt;
                        m.charges.push((now, actual[&r]));
                    }
                }
                Op::Release { pick } => {
                    if model.open.is_empty() { continue; }
                    let id = *model.open.keys().nth(pick % model.open.len()).unwrap();
                    let (_, holds) = model.open.remove(&id).unwrap();
                    b.release(id).unwrap();
                    for (l, r, amt) in holds {
                        model.budgets.get_mut(&(l, r)).unwrap().reserved -= amt;
                    }
                }
                Op::Expire => {
                    let mut ended: Vec<u64> = b.expire(t).iter().map(|e| e.reservation.id).collect();
                    ended.sort_unstable();
                    let due: Vec<u64> = model.open.iter().filter(|(_, (exp, _))| *exp <= now).map(|(id, _)| *id).collect();
                    prop_assert_eq!(&ended, &due);
                    for id in due {
                        let (_, holds) = model.open.remove(&id).unwrap();
                        for (l, r, amt) in holds {
                            let m = model.budgets.get_mut(&(l, r)).unwrap();
                            m.reserved -= amt;
                            if m.on_expiry == Expiry::Charge {
                                m.charges.push((now, amt));
                            }
                        }
                    }
                }
                Op::Advance { ms } => now += ms,
                Op::ChangeWindow { pick } => {
                    let key = model.budgets.keys().nth(pick).unwrap().clone();
                    let m = model.budgets.get_mut(&key).unwrap();
                    std::mem::swap(&mut m.window, &mut m.other);
                    let before = b.snapshot_level(&key.0, t).into_iter().find(|v| v.resource == key.1).unwrap().spent;
                    let change = b.set_budget(key.0.clone(), key.1.clone(), m.window.spec(m.hard, m.on_expiry), t).unwrap();
                    let change = change.expect("a new window is reported");
                    prop_assert_eq!(change.dropped, before);
                    m.charges.clear();
                    let after = b.snapshot_level(&key.0, t).into_iter().find(|v| v.resource == key.1).unwrap();
                    prop_assert_eq!(after.spent, 0, "a window change starts clean");
                }
            }
            check(&b, &model, now)?;
        }
    }
}

/// Days in a month, the way a calendar on the wall counts them.
fn days_in(y: i64, m: u32) -> u64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The monthly resets on `day` at `at_ms` local (UTC + offset_ms), walking
/// month by month from 1970-01 (`day` - 1 days after the month's first).
fn monthly_resets(day: u64, at_ms: u64, offset_ms: i64) -> impl Iterator<Item = i64> {
    let (mut y, mut m, mut first) = (1970i64, 1u32, 0u64);
    std::iter::from_fn(move || {
        let reset = (first + (day - 1) * DAY + at_ms) as i64 - offset_ms;
        first += days_in(y, m) * DAY;
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Some(reset)
    })
}

proptest! {
    #[test]
    fn monthly_windows_reset_on_the_stated_day_and_time_whatever_the_months_length(
        t in 86_400_000u64..4_102_444_800_000, // 1970-01-02 .. 2100-01-01
        day in 1u8..=28,
        at in 0u16..1440,
        offset in -840i16..=840,
    ) {
        let cal = Calendar::new("w", Period::Month { day }, at, offset).unwrap();
        let (start, next) = cal.period_at(Time::from_millis(t));
        let resets = monthly_resets(u64::from(day), u64::from(at) * 60_000, i64::from(offset) * 60_000);
        let (mut prev, mut want) = (i64::MIN, None);
        for r in resets {
            if r > t as i64 {
                want = Some((prev, r));
                break;
            }
            prev = r;
        }
        let (ws, wn) = want.unwrap();
        prop_assert_eq!((start.as_millis() as i64, next.as_millis() as i64), (ws.max(0), wn));
    }

    #[test]
    fn daily_windows_reset_at_the_stated_local_time(t in 0u64..4_102_444_800_000, at in 0u16..1440, offset in -840i16..=840) {
        let cal = Calendar::new("w", Period::Day, at, offset).unwrap();
        let (start, next) = cal.period_at(Time::from_millis(t));
        prop_assert!(start.as_millis() <= t && t < next.as_millis());
        prop_assert_eq!(next.as_millis() - start.as_millis(), DAY);
        let local = |x: u64| (x as i64 + i64::from(offset) * 60_000).rem_euclid(DAY as i64);
        prop_assert_eq!(local(next.as_millis()), i64::from(at) * 60_000);
    }
}

#[test]
fn a_monthly_budget_resets_exactly_at_its_time_in_february_of_a_leap_year_and_not_a_millisecond_before() {
    let mut b = Budgets::new();
    b.set_agent(agent(0), None, vec![]);
    let level = Level::Agent(agent(0));
    // $50/month from the 1st at 00:00 at +02:00: 2024-02-29T22:00:00Z is 2024-03-01 00:00 local.
    let cal = Calendar::parse("w", Period::Month { day: 1 }, "00:00", "+02:00").unwrap();
    let spec = BudgetSpec { hard: 50_000_000, soft: None, window: WindowSpec::Calendar(cal), on_expiry: Expiry::Charge };
    let feb_1 = Time::from_millis(1_706_738_400_000); // 2024-01-31T22:00:00Z
    let mar_1 = Time::from_millis(1_709_244_000_000); // 2024-02-29T22:00:00Z
    assert_eq!(cal.period_at(feb_1), (feb_1, mar_1));
    b.set_budget(level.clone(), usd(), spec, feb_1).unwrap();
    b.add(&agent(0), &usd(), 50_000_000, feb_1).unwrap();
    let one = BTreeMap::from([(usd(), 1)]);
    let before = Time::from_millis(mar_1.as_millis() - 1);
    let e = b.reserve(&agent(0), &one, Duration::from_secs(1), before).unwrap_err();
    assert_eq!(e.retry_after(), Some(mar_1));
    assert_eq!(b.snapshot_level(&level, before)[0].resets_at, Some(mar_1));
    b.reserve(&agent(0), &one, Duration::from_secs(1), mar_1).unwrap();
    let v = &b.snapshot_level(&level, mar_1)[0];
    assert_eq!((v.spent, v.reserved, v.resets_at), (0, 1, Some(Time::from_millis(1_711_922_400_000))), "next: 2024-03-31T22:00:00Z");
}

#[test]
fn a_rolling_day_forgets_a_spend_one_bucket_after_the_day_at_most() {
    let mut b = Budgets::new();
    b.set_agent(agent(0), None, vec![]);
    let level = Level::Agent(agent(0));
    b.set_budget(level.clone(), tokens(), BudgetSpec::rolling(5_000_000, Window::Day), Time::ZERO).unwrap();
    let t = Time::from_millis(10 * DAY + 1234);
    b.add(&agent(0), &tokens(), 5_000_000, t).unwrap();
    // Buckets of 24 min: the spend's bucket starts at 10 d, it leaves at 10 d + 1 d + 24 min.
    let leaves = Time::from_millis(11 * DAY + 24 * 60_000);
    assert_eq!(b.snapshot_level(&level, t)[0].resets_at, Some(leaves));
    assert_eq!(b.snapshot_level(&level, Time::from_millis(t.as_millis() + DAY))[0].spent, 5_000_000, "still inside the day + one bucket");
    assert_eq!(b.snapshot_level(&level, Time::from_millis(leaves.as_millis() - 1))[0].spent, 5_000_000);
    assert_eq!(b.snapshot_level(&level, leaves)[0].spent, 0);
}
