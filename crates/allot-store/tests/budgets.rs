//! Budgets in the store (migration 5): each reserve, settle, release, expiry
//! and usage report is one transaction; a reopened store rebuilds the core
//! ledger exactly; after a SIGKILL of a process in the middle of a load no
//! acknowledged reservation is lost, none settled is held again, nothing is
//! double-spent, and the ledger balances.
#![allow(clippy::unwrap_used)]

use allot_core::budget::{BudgetSpec, Budgets, Calendar, Expiry, Level, Period, WindowSpec};
use allot_core::quantity::Window;
use allot_core::{AgentId, Resource, Time};
use allot_store::Store;
use allot_store::dto::{StoredBudget, StoredReservation, StoredWindow};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const HARD: u64 = 1_000_000;

/// Open a store for writing. Another test here spawns children: between
/// fork and exec a child holds a copy of every descriptor of this process,
/// the lock of a store this test just closed included, and the kernel lets
/// the parent go on (`spawn` returns) before the child's close-on-exec
/// descriptors are closed. So a `Locked` naming this very process is waited
/// out for a moment.
fn open_store(path: &Path) -> Store {
    let started = Instant::now();
    loop {
        match Store::open(path) {
            Err(allot_store::StoreError::Locked { pid: Some(pid), .. })
                if pid == std::process::id() && started.elapsed() < Duration::from_secs(2) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}

fn tokens() -> Resource {
    Resource::Custom("tokens".into())
}

fn usd() -> Resource {
    Resource::Custom("usd_micros".into())
}

fn agent(i: u64) -> AgentId {
    AgentId::new(format!("a{i}")).unwrap()
}

/// Three agents in group g (tokens HARD per day, rolling); a1 and a2 also
/// draw on pool p (usd_micros 200k a month from the 1st, 00:00 UTC; expiries released).
fn ledger(now: Time) -> Budgets {
    ledger_of(now, HARD)
}

fn ledger_of(now: Time, hard: u64) -> Budgets {
    let mut b = Budgets::new();
    for i in 0..3 {
        b.set_agent(agent(i), Some("g".into()), if i > 0 { vec!["p".into()] } else { vec![] });
    }
    b.set_budget(Level::Group("g".into()), tokens(), BudgetSpec::rolling(hard, Window::Day), now).unwrap();
    let cal = Calendar::parse("p", Period::Month { day: 1 }, "00:00", "UTC").unwrap();
    let spec = BudgetSpec { hard: hard / 5, soft: Some(hard / 10), window: WindowSpec::Calendar(cal), on_expiry: Expiry::Release };
    b.set_budget(Level::Pool("p".into()), usd(), spec, now).unwrap();
    b
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn check_balance(b: &Budgets, now: Time) {
    for v in b.snapshot(now) {
        assert!(v.spent + v.reserved <= v.hard, "overspent: {v:?}");
        assert_eq!(v.spent + v.reserved + v.remaining, v.hard, "{v:?}");
    }
}

fn rebuilt(s: &Store, now: Time) -> Budgets {
    rebuilt_of(s, now, HARD)
}

fn rebuilt_of(s: &Store, now: Time, hard: u64) -> Budgets {
    let mut b = ledger_of(now, hard);
    s.load_budgets(&mut b, now).unwrap();
    b
}

/// One step of a load: reserve, settle, release or expire, recorded in the
/// store; returns a line saying what was acknowledged.
fn step(b: &mut Budgets, s: &mut Store, rng: &mut Rng, now: Time) -> Option<String> {
    let open: Vec<u64> = b.reservations().map(|r| r.id).collect();
    let pick = rng.below(10);
    if open.len() < 8 && pick < 6 {
        let a = rng.below(3);
        let mut want = BTreeMap::from([(tokens(), 1 + rng.below(20_000))]);
        if a > 0 && rng.below(2) == 0 {
            want.insert(usd(), rng.below(5_000));
        }
        let r = b.reserve(&agent(a), &want, Duration::from_secs(1 + rng.below(120)), now).ok()?;
        if let Err(e) = s.record_reservation(&r) {
            b.unreserve(&r);
            panic!("{e}");
        }
        Some(format!("R {}", r.id))
    } else if !open.is_empty() && pick < 9 {
        let id = open[rng.below(open.len() as u64) as usize];
        let r = b.reservation(id).unwrap().clone();
        let actual: BTreeMap<_, _> = r.holds.iter().map(|h| (h.resource.clone(), rng.below(h.amount + 1))).collect();
        let settled = b.settle(id, &actual, now).unwrap();
        s.record_settle(&settled).unwrap();
        Some(format!("S {id} {}", actual[&tokens()]))
    } else if !open.is_empty() {
        let id = open[rng.below(open.len() as u64) as usize];
        b.release(id).unwrap();
        s.record_release(id).unwrap();
        Some(format!("X {id}"))
    } else {
        let expired = b.expire(now);
        s.record_expired(&expired).unwrap();
        None
    }
}

#[test]
fn a_reopened_store_rebuilds_the_ledger_exactly_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut now = Time::from_millis(1_709_200_000_000); // 2024-02-29T09:46:40Z: a month's end is near
    let mut live = ledger(now);
    let mut s = open_store(&path);
    let mut rng = Rng(0x5eed);
    let mut highest = 0;
    for i in 0..2000u64 {
        step(&mut live, &mut s, &mut rng, now);
        if i % 13 == 5 {
            let expired = live.expire(now);
            s.record_expired(&expired).unwrap();
        }
        if i % 50 == 7 {
            let added = live.add(&agent(1), &usd(), rng.below(3_000), now).unwrap();
            s.record_charges(&added.charges).unwrap();
        }
        highest = highest.max(live.next_id());
        now = now.plus(Duration::from_millis(rng.below(90_000)));
        if i % 97 == 0 {
            // Dropped without any shutdown, opened again: the same ledger.
            drop(s);
            s = open_store(&path);
            let back = rebuilt(&s, now);
            assert_eq!(back.snapshot(now), live.snapshot(now), "after step {i}");
            assert_eq!(back.reservations().collect::<Vec<_>>(), live.reservations().collect::<Vec<_>>());
            assert_eq!(back.next_id(), live.next_id());
            check_balance(&back, now);
            live = back;
        }
    }
    // Settle everything: the next id still follows the highest ever given.
    let open: Vec<u64> = live.reservations().map(|r| r.id).collect();
    for id in open {
        let settled = live.settle(id, &BTreeMap::new(), now).unwrap();
        s.record_settle(&settled).unwrap();
    }
    drop(s);
    let s = open_store(&path);
    assert!(s.reservations().unwrap().is_empty());
    assert_eq!(rebuilt(&s, now).next_id(), highest);
}

#[test]
fn a_window_change_while_down_drops_the_old_spend_and_a_removed_budget_releases_its_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let now = Time::from_secs(1_700_000_000);
    let mut b = ledger(now);
    let mut s = open_store(&path);
    let added = b.add(&agent(0), &tokens(), 500, now).unwrap();
    s.record_charges(&added.charges).unwrap();
    let r = b.reserve(&agent(1), &BTreeMap::from([(tokens(), 100), (usd(), 10)]), Duration::from_secs(60), now).unwrap();
    s.record_reservation(&r).unwrap();
    drop(s);
    let s = open_store(&path);
    // The fleet file now says per hour: the old day's spend is not this window's.
    let mut changed = ledger(now);
    changed.set_budget(Level::Group("g".into()), tokens(), BudgetSpec::rolling(HARD, Window::Hour), now).unwrap();
    let load = s.load_budgets(&mut changed, now).unwrap();
    assert_eq!((load.reservations, load.spend_rows, load.spend_dropped), (1, 0, 1));
    let g = &changed.snapshot_level(&Level::Group("g".into()), now)[0];
    assert_eq!((g.spent, g.reserved), (0, 100), "clean window, the reservation still held");
    // Removing the pool's budget: the reservation no longer holds there, also once reloaded.
    let mut s = s;
    let mut b = rebuilt(&s, now);
    assert!(b.remove_budget(&Level::Pool("p".into()), &usd()));
    s.record_budget_removed(&Level::Pool("p".into()), &usd()).unwrap();
    let stored = s.reservations().unwrap();
    let usd_hold = stored[0].holds.iter().find(|h| h.resource == "usd_micros").unwrap();
    assert!(usd_hold.levels.is_empty(), "{usd_hold:?}");
    assert_eq!(stored[0].to_core().unwrap(), *b.reservation(r.id).unwrap());
}

#[test]
fn huge_spend_saturates_in_the_store_and_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let now = Time::from_secs(1_700_000_000);
    let mut b = ledger(now);
    let mut s = open_store(&path);
    for _ in 0..3 {
        let added = b.add(&agent(0), &tokens(), u64::MAX / 2, now).unwrap();
        s.record_charges(&added.charges).unwrap();
    }
    drop(s);
    let s = open_store(&path);
    let back = rebuilt(&s, now);
    let g = &back.snapshot_level(&Level::Group("g".into()), now)[0];
    assert!(g.spent >= i64::MAX as u64 && g.remaining == 0, "{g:?}");
}

#[test]
fn stored_budgets_round_trip_and_a_bad_row_names_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_store(&dir.path().join("s.db"));
    let b = ledger(Time::ZERO);
    let p = Level::Pool("p".into());
    let spec = *b.budget(&p, &usd()).unwrap();
    s.put_budget(&p, &usd(), &StoredBudget::from_core(&spec), 5).unwrap();
    let all = s.stored_budgets().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.as_str(), all[0].1.as_str()), ("pool:p", "usd_micros"));
    assert_eq!(all[0].2.to_core().unwrap(), spec);
    let bad = StoredBudget { window: StoredWindow::Rolling { length_ms: 1000, buckets: 60 }, ..all[0].2.clone() };
    assert_eq!(bad.to_core().unwrap_err().to_string(), "window: a window of 1000 ms does not split into 60 buckets of whole milliseconds");
    let bad = StoredBudget { on_expiry: "keep".into(), ..all[0].2.clone() };
    assert!(bad.to_core().unwrap_err().to_string().starts_with("on_expiry: unknown expiry \"keep\""));
    assert!(s.delete_budget(&p, &usd()).unwrap());
    assert!(s.stored_budgets().unwrap().is_empty());
    let r = StoredReservation { id: 1, agent: "a0".into(), created_ms: 0, expires_ms: 1, holds: vec![] };
    let mut bad = r.clone();
    bad.holds.push(allot_store::dto::StoredBudgetHold { resource: "memory".into(), amount: 1, levels: vec!["group:g".into()] });
    assert!(bad.to_core().unwrap_err().to_string().starts_with("holds.memory: memory is not a custom resource"));
    bad.holds[0] = allot_store::dto::StoredBudgetHold { resource: "tokens".into(), amount: 1, levels: vec!["team:x".into()] };
    assert!(bad.to_core().unwrap_err().to_string().starts_with("holds.tokens.levels: invalid budget level \"team:x\""));
}

#[test]
fn a_levels_budgets_are_replaced_whole_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_store(&dir.path().join("s.db"));
    let b = ledger(Time::ZERO);
    let p = Level::Pool("p".into());
    let spec = StoredBudget::from_core(b.budget(&p, &usd()).unwrap());
    let tokens = Resource::Custom("tokens".into());
    s.replace_level_budgets(&p, &[(usd(), spec.clone()), (tokens.clone(), spec.clone())], 1).unwrap();
    s.put_budget(&Level::Pool("q".into()), &usd(), &spec, 1).unwrap();
    let names = |s: &Store| s.stored_budgets().unwrap().into_iter().map(|(l, r, _)| format!("{l} {r}")).collect::<Vec<_>>();
    assert_eq!(names(&s), ["pool:p tokens", "pool:p usd_micros", "pool:q usd_micros"]);
    s.replace_level_budgets(&p, &[(tokens, spec)], 2).unwrap();
    assert_eq!(names(&s), ["pool:p tokens", "pool:q usd_micros"], "usd_micros of p is gone, q untouched");
    s.replace_level_budgets(&p, &[], 3).unwrap();
    assert_eq!(names(&s), ["pool:q usd_micros"]);
}

#[test]
fn migration_5_keeps_the_data_of_schema_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let s = Store::open_at_version(&path, 4).unwrap();
        s.append_event(1, "agent.started", Some("a0"), &serde_json::json!({})).unwrap();
        assert!(!s.has_table("budget_spend").unwrap());
    }
    let s = open_store(&path);
    assert_eq!(s.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert!(s.has_table("budget_spend").unwrap() && s.has_table("budget_reservations").unwrap());
    assert_eq!(s.last_seq().unwrap(), 1);
    assert_eq!(s.next_reservation_id().unwrap(), 1);
}

const CHILD: &str = "ALLOT_TEST_BUDGET_CHILD";
/// The child's load never fills this: it keeps printing until killed.
const CHILD_HARD: u64 = 1 << 40;

fn wall() -> Time {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    Time::from_millis(u64::try_from(ms).unwrap())
}

/// The child: load the ledger, then reserve, settle and release until
/// killed, printing each step after its transaction committed.
fn child(path: &Path) -> ! {
    let mut s = Store::open(path).unwrap();
    let mut b = rebuilt_of(&s, wall(), CHILD_HARD);
    let mut rng = Rng(u64::from(std::process::id()) | 1);
    let mut out = std::io::stdout().lock();
    loop {
        if let Some(line) = step(&mut b, &mut s, &mut rng, wall()) {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_in_the_middle_of_a_load_loses_no_reservation_and_double_spends_nothing() {
    if let Some(path) = std::env::var_os(CHILD) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (mut open, mut ended, mut settled_tokens) = (BTreeMap::new(), Vec::new(), 0u64);
    let mut rng = Rng(42);
    for round in 0..8 {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["sigkill_in_the_middle_of_a_load_loses_no_reservation_and_double_spends_nothing", "--exact", "--nocapture"])
            .env(CHILD, &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Lines come through a thread, so a silent child cannot block the test.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ack = |line: &str| {
            let parts: Vec<&str> = line.split(' ').collect();
            let Some(id) = parts.get(1).and_then(|id| id.parse::<u64>().ok()) else { return false };
            match parts[0] {
                "R" => assert!(open.insert(id, ()).is_none(), "round {round}: id {id} given twice"),
                "S" | "X" => {
                    assert!(open.remove(&id).is_some(), "round {round}: {line}: not open");
                    ended.push(id);
                    settled_tokens += parts.get(2).map_or(0, |a| a.parse::<u64>().unwrap());
                }
                _ => return false,
            }
            true
        };
        // Kill it after a random number of acknowledged steps, mid-transaction as likely as not.
        let want = 20 + rng.below(400);
        let started = Instant::now();
        let mut seen = 0;
        while seen < want && started.elapsed() < Duration::from_secs(20) {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => seen += usize::from(ack(&line)) as u64,
                Err(_) => break,
            }
        }
        assert!(seen > 0, "round {round}: the child acknowledged nothing");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        reader.join().unwrap();
        // What it printed before dying was committed.
        while let Ok(line) = rx.try_recv() {
            ack(&line);
        }
        let s = open_store(&path);
        let now = wall();
        let b = rebuilt_of(&s, now, CHILD_HARD);
        check_balance(&b, now);
        let held: Vec<u64> = b.reservations().map(|r| r.id).collect();
        for id in &ended {
            assert!(!held.contains(id), "round {round}: settled reservation {id} held again");
        }
        // One step was in flight at the kill: committed or not, acknowledged or
        // not. So at most one acknowledged reservation is no longer held (a
        // settle or release committed, its line not written), or at most one
        // held was not acknowledged (a reservation committed, its line not
        // written); never both, never more.
        let gone: Vec<u64> = open.keys().filter(|id| !held.contains(id)).copied().collect();
        let unacked: Vec<u64> = held.iter().filter(|id| !open.contains_key(id)).copied().collect();
        assert!(
            gone.len() + unacked.len() <= 1,
            "round {round}: acknowledged but not held {gone:?}, held but not acknowledged {unacked:?}"
        );
        for id in gone {
            open.remove(&id);
            ended.push(id);
        }
        for id in unacked {
            open.insert(id, ());
        }
        // Spent tokens: every acknowledged settle once, plus at most the settle in flight.
        let g = b.snapshot_level(&Level::Group("g".into()), now).remove(0);
        assert!(
            g.spent >= settled_tokens && g.spent <= settled_tokens + 20_000,
            "round {round}: spent {} for {settled_tokens} settled",
            g.spent
        );
        settled_tokens = g.spent;
    }
    assert!(!ended.is_empty());
}
