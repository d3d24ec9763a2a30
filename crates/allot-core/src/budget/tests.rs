#![allow(clippy::unwrap_used)]

use super::*;
use crate::limits::Limit;
use crate::quantity::Window;

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn tokens() -> Resource {
    Resource::Custom("tokens".into())
}

fn usd() -> Resource {
    Resource::Custom("usd_micros".into())
}

fn amounts(v: &[(Resource, u64)]) -> BTreeMap<Resource, u64> {
    v.iter().cloned().collect()
}

const S: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

/// Agents a and b in group g (1000 tokens/min); a also has 600/min of its own.
fn ledger() -> Budgets {
    let mut b = Budgets::new();
    b.set_agent(id("a"), Some("g".into()), vec![]);
    b.set_agent(id("b"), Some("g".into()), vec![]);
    b.set_budget(Level::Group("g".into()), tokens(), BudgetSpec::rolling(1000, Window::Minute), Time::ZERO).unwrap();
    b.set_budget(Level::Agent(id("a")), tokens(), BudgetSpec::rolling(600, Window::Minute), Time::ZERO).unwrap();
    b
}

fn view(b: &Budgets, level: &Level, r: &Resource, now: Time) -> BudgetView {
    b.snapshot_level(level, now).into_iter().find(|v| &v.resource == r).unwrap()
}

#[test]
fn a_reservation_holds_at_every_level_and_a_refusal_changes_nothing() {
    let mut b = ledger();
    let g = Level::Group("g".into());
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 500)]), MIN, Time::ZERO).unwrap();
    assert_eq!(r.holds[0].levels, vec![Level::Agent(id("a")), g.clone()]);
    assert_eq!(r.expires, Time::from_secs(60));
    b.reserve(&id("b"), &amounts(&[(tokens(), 400)]), MIN, Time::ZERO).unwrap();
    let before = b.clone();
    // a has 100 left of its own, the group 100: 200 is refused by a's own level first.
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 200)]), MIN, Time::ZERO).unwrap_err();
    assert!(matches!(&e, Refusal::Exhausted { level: Level::Agent(_), requested: 200, reserved: 500, hard: 600, .. }), "{e:?}");
    // b is refused by the group.
    let e = b.reserve(&id("b"), &amounts(&[(tokens(), 101)]), MIN, Time::ZERO).unwrap_err();
    assert!(matches!(&e, Refusal::Exhausted { level: Level::Group(_), reserved: 900, .. }), "{e:?}");
    assert_eq!(e.to_string(), "group:g tokens: 101 more would take spent (0) + reserved (900) above hard (1000)");
    assert_eq!(b, before, "a refusal changes nothing");
}

#[test]
fn reserve_is_all_or_nothing_across_resources() {
    let mut b = ledger();
    b.set_budget(Level::Group("g".into()), usd(), BudgetSpec::rolling(50, Window::Minute), Time::ZERO).unwrap();
    let before = b.clone();
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 10), (usd(), 51)]), MIN, Time::ZERO).unwrap_err();
    assert!(matches!(e, Refusal::Exhausted { ref resource, .. } if *resource == usd()));
    assert_eq!(b, before, "the tokens were not held either");
}

#[test]
fn settle_returns_the_unused_part_and_reports_an_overrun() {
    let mut b = ledger();
    let a = Level::Agent(id("a"));
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 400)]), MIN, Time::ZERO).unwrap();
    let s = b.settle(r.id, &amounts(&[(tokens(), 310)]), Time::from_secs(2)).unwrap();
    assert_eq!(s.lines[0], SettleLine { resource: tokens(), reserved: 400, actual: 310, returned: 90, overrun: 0 });
    assert!(!s.overran());
    let v = view(&b, &a, &tokens(), Time::from_secs(2));
    assert_eq!((v.spent, v.reserved, v.remaining), (310, 0, 290));
    // An overrun: charged in full at both levels, reported, and a's budget is now over.
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 200)]), MIN, Time::from_secs(3)).unwrap();
    let s = b.settle(r.id, &amounts(&[(tokens(), 450)]), Time::from_secs(4)).unwrap();
    assert_eq!((s.lines[0].overrun, s.lines[0].actual), (250, 450));
    assert!(s.overran());
    assert_eq!(s.over_limit, vec![OverLimit { level: a.clone(), resource: tokens(), used: 760, hard: 600 }]);
    assert_eq!(s.charges.iter().map(|c| c.amount).sum::<u64>(), 900, "450 at each of two levels");
    assert_eq!(view(&b, &a, &tokens(), Time::from_secs(4)).remaining, 0);
    assert_eq!(b.settle(r.id, &BTreeMap::new(), Time::from_secs(5)), Err(SettleError::UnknownReservation(r.id)));
}

#[test]
fn a_resource_left_out_of_a_settle_is_charged_as_reserved_and_one_not_reserved_is_charged_too() {
    let mut b = ledger();
    b.set_budget(Level::Group("g".into()), usd(), BudgetSpec::rolling(50_000, Window::Minute), Time::ZERO).unwrap();
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 400)]), MIN, Time::ZERO).unwrap();
    let s = b.settle(r.id, &amounts(&[(usd(), 12_000)]), Time::ZERO).unwrap();
    assert_eq!(s.lines[0], SettleLine { resource: tokens(), reserved: 400, actual: 400, returned: 0, overrun: 0 });
    assert_eq!(s.lines[1], SettleLine { resource: usd(), reserved: 0, actual: 12_000, returned: 0, overrun: 12_000 });
    // A resource without any budget refuses the whole settle.
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 1)]), MIN, Time::ZERO).unwrap();
    let before = b.clone();
    let e = b.settle(r.id, &amounts(&[(Resource::Custom("gpu_s".into()), 1)]), Time::ZERO).unwrap_err();
    assert!(matches!(e, SettleError::UnknownResource { .. }));
    assert_eq!(b, before);
}

#[test]
fn fail_closed_on_unknown_agents_resources_and_pools() {
    let mut b = ledger();
    let one = |r: Resource| amounts(&[(r, 1)]);
    assert!(matches!(b.reserve(&id("z"), &one(tokens()), MIN, Time::ZERO), Err(Refusal::UnknownAgent(_))));
    assert!(matches!(b.reserve(&id("a"), &one(usd()), MIN, Time::ZERO), Err(Refusal::UnknownResource { .. })));
    assert!(matches!(b.reserve(&id("a"), &one(Resource::Memory), MIN, Time::ZERO), Err(Refusal::UnknownResource { .. })));
    assert!(matches!(b.add(&id("a"), &usd(), 5, Time::ZERO), Err(Refusal::UnknownResource { .. })));
    b.set_agent(id("c"), None, vec!["shared".into()]);
    let e = b.reserve(&id("c"), &one(tokens()), MIN, Time::ZERO).unwrap_err();
    assert_eq!(e.to_string(), "agent c: pool:shared has no budget");
    assert!(matches!(b.reserve(&id("a"), &BTreeMap::new(), MIN, Time::ZERO), Err(Refusal::Invalid(_))));
    let e = b.reserve(&id("a"), &one(tokens()), Duration::ZERO, Time::ZERO).unwrap_err();
    assert_eq!(e.to_string(), "ttl 0s: use more than 0 and at most 365d");
    assert!(b.set_budget(Level::Pool("p".into()), Resource::Memory, BudgetSpec::rolling(1, Window::Minute), Time::ZERO).is_err());
    let mut bad = BudgetSpec::rolling(10, Window::Minute);
    bad.soft = Some(11);
    let e = b.set_budget(Level::Pool("p".into()), tokens(), bad, Time::ZERO).unwrap_err();
    assert_eq!(e.to_string(), "pool:p.tokens: soft (11) must not exceed hard (10)");
}

#[test]
fn a_pool_is_shared_by_the_agents_that_draw_on_it() {
    let mut b = Budgets::new();
    let p = Level::Pool("shared".into());
    b.set_budget(p.clone(), usd(), BudgetSpec::rolling(100, Window::Hour), Time::ZERO).unwrap();
    b.set_agent(id("x"), None, vec!["shared".into()]);
    b.set_agent(id("y"), Some("other".into()), vec!["shared".into()]);
    b.reserve(&id("x"), &amounts(&[(usd(), 60)]), MIN, Time::ZERO).unwrap();
    let e = b.reserve(&id("y"), &amounts(&[(usd(), 41)]), MIN, Time::ZERO).unwrap_err();
    assert!(matches!(e, Refusal::Exhausted { ref level, .. } if *level == p));
    b.reserve(&id("y"), &amounts(&[(usd(), 40)]), MIN, Time::ZERO).unwrap();
    let views = b.snapshot_agent(&id("y"), Time::ZERO).unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].reserved, views[0].remaining), (100, 0));
}

#[test]
fn retry_after_is_when_the_rolling_window_frees_enough_and_none_when_never() {
    let mut b = ledger();
    // a spends 300 at 0 s, 200 at 10 s (its own 600/min).
    b.add(&id("a"), &tokens(), 300, Time::ZERO).unwrap();
    b.add(&id("a"), &tokens(), 200, Time::from_secs(10)).unwrap();
    let now = Time::from_secs(20);
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 150)]), MIN, now).unwrap_err();
    // 500 spent, 150 more needs 50 freed: the first bucket (0 s) leaves at 61 s (60 buckets + the current one).
    assert_eq!(e.retry_after(), Some(Time::from_secs(61)));
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 450)]), MIN, now).unwrap_err();
    assert_eq!(e.retry_after(), Some(Time::from_secs(71)), "both buckets must leave");
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 601)]), MIN, now).unwrap_err();
    assert_eq!(e.retry_after(), None, "more than the limit never fits");
    // At 61 s it fits.
    assert!(b.reserve(&id("a"), &amounts(&[(tokens(), 150)]), MIN, Time::from_millis(60_999)).is_err());
    b.reserve(&id("a"), &amounts(&[(tokens(), 150)]), MIN, Time::from_secs(61)).unwrap();
}

#[test]
fn retry_after_is_the_next_expiry_when_reservations_alone_fill_the_budget() {
    let mut b = ledger();
    b.reserve(&id("a"), &amounts(&[(tokens(), 550)]), Duration::from_secs(30), Time::ZERO).unwrap();
    let e = b.reserve(&id("a"), &amounts(&[(tokens(), 100)]), MIN, Time::from_secs(1)).unwrap_err();
    assert_eq!(e.retry_after(), Some(Time::from_secs(30)));
}

#[test]
fn calendar_retry_after_is_the_reset() {
    let mut b = Budgets::new();
    b.set_agent(id("a"), None, vec![]);
    let cal = Calendar::parse("x", Period::Day, "06:00", "+02:00").unwrap();
    let spec = BudgetSpec { hard: 100, soft: None, window: WindowSpec::Calendar(cal), on_expiry: Expiry::Charge };
    b.set_budget(Level::Agent(id("a")), usd(), spec, Time::ZERO).unwrap();
    b.add(&id("a"), &usd(), 100, Time::from_secs(3600)).unwrap();
    let e = b.reserve(&id("a"), &amounts(&[(usd(), 1)]), MIN, Time::from_secs(3600)).unwrap_err();
    // 06:00 at +02:00 is 04:00 UTC.
    assert_eq!(e.retry_after(), Some(Time::from_secs(4 * 3600)));
    assert_eq!(view(&b, &Level::Agent(id("a")), &usd(), Time::from_secs(3600)).resets_at, Some(Time::from_secs(4 * 3600)));
    b.reserve(&id("a"), &amounts(&[(usd(), 100)]), MIN, Time::from_secs(4 * 3600)).unwrap();
}

#[test]
fn expiry_charges_in_full_by_default_or_releases_when_the_budget_says_so() {
    let mut b = ledger();
    let mut g = BudgetSpec::rolling(1000, Window::Minute);
    g.on_expiry = Expiry::Release;
    b.set_budget(Level::Group("g".into()), tokens(), g, Time::ZERO).unwrap();
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 300)]), Duration::from_secs(5), Time::ZERO).unwrap();
    assert_eq!(b.next_expiry(), Some(Time::from_secs(5)));
    assert!(b.expire(Time::from_millis(4999)).is_empty());
    let e = b.expire(Time::from_secs(5));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reservation.id, r.id);
    assert_eq!(e[0].charges.len(), 1, "charged at the agent only");
    let now = Time::from_secs(5);
    let (a, g) = (view(&b, &Level::Agent(id("a")), &tokens(), now), view(&b, &Level::Group("g".into()), &tokens(), now));
    assert_eq!((a.spent, a.reserved, g.spent, g.reserved), (300, 0, 0, 0));
    assert!(b.settle(r.id, &BTreeMap::new(), now).is_err(), "expired is no longer open");
    assert_eq!(b.next_expiry(), None);
}

#[test]
fn release_returns_everything() {
    let mut b = ledger();
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 600)]), MIN, Time::ZERO).unwrap();
    assert_eq!(b.release(r.id).unwrap().id, r.id);
    let v = view(&b, &Level::Agent(id("a")), &tokens(), Time::ZERO);
    assert_eq!((v.spent, v.reserved, v.remaining), (0, 0, 600));
    assert_eq!(b.release(r.id), Err(SettleError::UnknownReservation(r.id)));
}

#[test]
fn a_window_change_starts_clean_and_says_so_and_a_limit_change_keeps_the_spend() {
    let mut b = ledger();
    let a = Level::Agent(id("a"));
    b.add(&id("a"), &tokens(), 250, Time::ZERO).unwrap();
    assert_eq!(b.set_budget(a.clone(), tokens(), BudgetSpec::rolling(700, Window::Minute), S.into_time()).unwrap(), None);
    assert_eq!(view(&b, &a, &tokens(), Time::from_secs(1)).spent, 250);
    let change = b.set_budget(a.clone(), tokens(), BudgetSpec::rolling(5000, Window::Day), Time::from_secs(2)).unwrap().unwrap();
    assert_eq!(change.dropped, 250);
    assert_eq!(change.from, WindowSpec::Rolling(Rolling::of(Window::Minute)));
    assert_eq!(view(&b, &a, &tokens(), Time::from_secs(2)).spent, 0);
    // The group's spend is untouched.
    assert_eq!(view(&b, &Level::Group("g".into()), &tokens(), Time::from_secs(2)).spent, 250);
}

#[test]
fn removing_a_budget_lets_reservations_forget_it() {
    let mut b = ledger();
    let a = Level::Agent(id("a"));
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 500)]), MIN, Time::ZERO).unwrap();
    assert!(b.remove_budget(&a, &tokens()));
    b.set_budget(a.clone(), tokens(), BudgetSpec::rolling(600, Window::Minute), Time::ZERO).unwrap();
    b.reserve(&id("a"), &amounts(&[(tokens(), 400)]), MIN, Time::ZERO).unwrap();
    b.release(r.id).unwrap();
    assert_eq!(view(&b, &a, &tokens(), Time::ZERO).reserved, 400, "the old reservation took nothing off the new budget");
}

#[test]
fn undo_puts_the_ledger_back_as_it_was() {
    let mut b = ledger();
    b.add(&id("b"), &tokens(), 100, Time::ZERO).unwrap();
    let start = b.clone();
    let r = b.reserve(&id("a"), &amounts(&[(tokens(), 300)]), MIN, Time::from_secs(1)).unwrap();
    let held = b.clone();
    let s = b.settle(r.id, &amounts(&[(tokens(), 200)]), Time::from_secs(2)).unwrap();
    b.unsettle(&s);
    assert_eq!(b.snapshot(Time::from_secs(2)), held.snapshot(Time::from_secs(2)));
    b.unreserve(&r);
    assert_eq!(b.snapshot(Time::from_secs(2)), start.snapshot(Time::from_secs(2)));
    let added = b.add(&id("a"), &tokens(), 50, Time::from_secs(3)).unwrap();
    b.uncharge(&added.charges);
    assert_eq!(b.snapshot(Time::from_secs(3)), start.snapshot(Time::from_secs(3)));
}

#[test]
fn levels_parse_and_print() {
    for s in ["agent:a-1.x", "group:g", "pool:shared_usd"] {
        assert_eq!(s.parse::<Level>().unwrap().to_string(), s);
    }
    for bad in ["agent:", "team:x", "pool:Big", "group", "pool:a/b"] {
        assert!(bad.parse::<Level>().unwrap_err().to_string().contains("expected agent:<id>"), "{bad}");
    }
}

#[test]
fn from_limit_takes_the_window_and_soft() {
    let mut l = Limit::new(80, 100, crate::Action::Throttle);
    l.window = Some(Window::Day);
    let s = BudgetSpec::from_limit(&l);
    assert_eq!((s.hard, s.soft, s.window), (100, Some(80), WindowSpec::Rolling(Rolling::of(Window::Day))));
}

trait IntoTime {
    fn into_time(self) -> Time;
}

impl IntoTime for Duration {
    fn into_time(self) -> Time {
        Time::ZERO.plus(self)
    }
}

#[test]
fn huge_reports_saturate_instead_of_panicking() {
    let mut b = ledger();
    let r = b.reserve(&id("b"), &amounts(&[(tokens(), 0)]), MIN, Time::ZERO).unwrap();
    let s = b.settle(r.id, &amounts(&[(tokens(), u64::MAX)]), Time::ZERO).unwrap();
    assert_eq!(s.lines[0].overrun, u64::MAX);
    for t in [0, 1, 2, 70, 200] {
        let now = Time::from_secs(t);
        b.add(&id("a"), &tokens(), u64::MAX, now).unwrap();
        b.add(&id("a"), &tokens(), u64::MAX, now).unwrap();
        let e = b.reserve(&id("a"), &amounts(&[(tokens(), u64::MAX)]), MIN, now).unwrap_err();
        assert_eq!(e.retry_after(), None);
        let v = view(&b, &Level::Group("g".into()), &tokens(), Time::from_secs(t + 30));
        assert_eq!((v.spent, v.remaining), (u64::MAX, 0));
    }
}

#[test]
fn the_next_expiry_follows_every_open_and_close() {
    let mut b = ledger();
    let one = |b: &mut Budgets, ttl: u64| b.reserve(&id("b"), &amounts(&[(tokens(), 1)]), S * ttl as u32, Time::ZERO).unwrap();
    let (r30, r10, r20, r40) = (one(&mut b, 30), one(&mut b, 10), one(&mut b, 20), one(&mut b, 40));
    assert_eq!(b.next_expiry(), Some(Time::from_secs(10)));
    b.release(r10.id).unwrap();
    assert_eq!(b.next_expiry(), Some(Time::from_secs(20)));
    b.settle(r20.id, &BTreeMap::new(), Time::from_secs(1)).unwrap();
    assert_eq!(b.next_expiry(), Some(Time::from_secs(30)));
    // Undo of a settle opens it again, with its expiry.
    let s = b.settle(r30.id, &BTreeMap::new(), Time::from_secs(2)).unwrap();
    assert_eq!(b.next_expiry(), Some(Time::from_secs(40)));
    b.unsettle(&s);
    assert_eq!(b.next_expiry(), Some(Time::from_secs(30)));
    let due: Vec<u64> = b.expire(Time::from_secs(35)).iter().map(|e| e.reservation.id).collect();
    assert_eq!(due, [r30.id]);
    assert_eq!(b.next_expiry(), Some(Time::from_secs(40)));
    b.unreserve(&r40);
    assert_eq!((b.next_expiry(), b.expire(Time::from_secs(1000)).len()), (None, 0));
}

#[test]
fn budgets_stay_within_what_the_store_keeps_exactly() {
    let mut b = Budgets::new();
    let t0 = Time::from_secs(1000);
    let over = BudgetSpec::rolling(MAX_BUDGET + 1, Window::Day);
    let e = b.set_budget(Level::Pool("p".into()), tokens(), over, t0).unwrap_err();
    assert!(e.to_string().contains("the most the state database keeps exactly"), "{e}");
    assert!(b.set_budget(Level::Pool("p".into()), tokens(), BudgetSpec::rolling(MAX_BUDGET, Window::Day), t0).is_ok());
    // A limit above it (no limit in practice) becomes a budget of that much.
    let limit = Limit::new(u64::MAX, u64::MAX, crate::Action::Warn);
    let spec = BudgetSpec::from_limit(&limit);
    assert_eq!((spec.hard, spec.soft), (MAX_BUDGET, None));
}

#[test]
fn a_cluster_slice_caps_a_budget_and_a_larger_one_lifts_it() {
    let mut b = ledger();
    let g = Level::Group("g".into());
    assert!(b.set_cap(&g, &tokens(), Some(300)));
    assert!(!b.set_cap(&Level::Pool("none".into()), &tokens(), Some(1)), "no such budget");
    b.reserve(&id("b"), &amounts(&[(tokens(), 300)]), MIN, Time::ZERO).unwrap();
    let e = b.reserve(&id("b"), &amounts(&[(tokens(), 1)]), MIN, Time::ZERO).unwrap_err();
    assert!(matches!(&e, Refusal::Exhausted { hard: 300, reserved: 300, .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Time::ZERO.plus(CAPPED_RETRY)), "a slice may grow: retry soon");
    let v = view(&b, &g, &tokens(), Time::ZERO);
    assert_eq!((v.hard, v.cap, v.remaining), (1000, Some(300), 0));
    assert!(b.set_cap(&g, &tokens(), Some(5000)));
    let v = view(&b, &g, &tokens(), Time::ZERO);
    assert_eq!(v.remaining, 700, "never above the budget's own hard limit");
    b.reserve(&id("b"), &amounts(&[(tokens(), 700)]), MIN, Time::ZERO).unwrap();
    // A cap under the use refuses everything until the window frees it.
    assert!(b.set_cap(&g, &tokens(), Some(0)));
    assert!(b.reserve(&id("b"), &amounts(&[(tokens(), 1)]), MIN, Time::ZERO).is_err());
    assert_eq!(view(&b, &g, &tokens(), Time::ZERO).remaining, 0);
}
