//! The cost floor of a budget reserve + settle pair, single-threaded: the
//! core ledger alone, then the core with each reserve and each settle
//! recorded in the store (WAL, synchronous=NORMAL): one transaction per
//! reserve and per settle, then group commits of 8 and 64 pairs (what a
//! daemon serving that many clients at once could batch). Prints pairs per
//! second and microseconds per pair:
//! `cargo run --release -p allot-store --example budget_bench [PAIRS]`.
#![allow(clippy::unwrap_used)]

use allot_core::budget::{BudgetSpec, Budgets, Level};
use allot_core::quantity::Window;
use allot_core::{AgentId, Resource, Time};
use allot_store::{BudgetRecord, Store};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Three agents in one group, tokens limited per agent and per group, usd in a shared pool.
fn ledger(now: Time) -> (Budgets, Vec<AgentId>) {
    let mut b = Budgets::new();
    let agents: Vec<AgentId> = (0..3).map(|i| AgentId::new(format!("agent-{i}")).unwrap()).collect();
    let tokens = Resource::Custom("tokens".into());
    let usd = Resource::Custom("usd_micros".into());
    b.set_budget(Level::Group("llm".into()), tokens.clone(), BudgetSpec::rolling(u64::MAX / 4, Window::Day), now).unwrap();
    b.set_budget(Level::Pool("shared".into()), usd, BudgetSpec::rolling(u64::MAX / 4, Window::Day), now).unwrap();
    for a in &agents {
        b.set_agent(a.clone(), Some("llm".into()), vec!["shared".into()]);
        b.set_budget(Level::Agent(a.clone()), tokens.clone(), BudgetSpec::rolling(u64::MAX / 4, Window::Minute), now).unwrap();
    }
    (b, agents)
}

/// `pairs` reserve + settle pairs; with a store, every `batch` pairs are
/// recorded in one transaction for their reserves, then one for their
/// settles (batch 1: one transaction per reserve and per settle).
fn run(pairs: u64, mut store: Option<(&mut Store, usize)>) -> Duration {
    let start = Time::from_secs(1_700_000_000);
    let (mut b, agents) = ledger(start);
    let tokens = Resource::Custom("tokens".into());
    let usd = Resource::Custom("usd_micros".into());
    let want = BTreeMap::from([(tokens.clone(), 4000), (usd.clone(), 12_000)]);
    let actual = BTreeMap::from([(tokens, 3100), (usd, 9_300)]);
    let batch = store.as_ref().map_or(1, |(_, n)| *n) as u64;
    let t0 = Instant::now();
    let mut i = 0;
    while i < pairs {
        let n = batch.min(pairs - i);
        // Time moves 1 ms a pair: buckets turn over as in a busy daemon.
        let now = start.plus(Duration::from_millis(i));
        let reserved: Vec<_> =
            (0..n).map(|k| b.reserve(&agents[((i + k) % 3) as usize], &want, Duration::from_secs(60), now).unwrap()).collect();
        if let Some((s, _)) = store.as_mut() {
            let records: Vec<_> = reserved.iter().map(BudgetRecord::Reserved).collect();
            s.record_budget_batch(&records).unwrap();
        }
        let settled: Vec<_> = reserved.iter().map(|r| b.settle(r.id, &actual, now).unwrap()).collect();
        if let Some((s, _)) = store.as_mut() {
            let records: Vec<_> = settled.iter().map(BudgetRecord::Settled).collect();
            s.record_budget_batch(&records).unwrap();
        }
        i += n;
    }
    t0.elapsed()
}

fn report(what: &str, pairs: u64, took: Duration) {
    let per_s = pairs as f64 / took.as_secs_f64();
    println!("{what:<40} {pairs:>8} pairs in {:>8.1} ms: {per_s:>10.0} pairs/s, {:>7.2} us/pair", took.as_secs_f64() * 1e3, 1e6 / per_s);
}

fn main() {
    let pairs: u64 = std::env::args().nth(1).map_or(100_000, |a| a.parse().expect("PAIRS: a number"));
    println!("reserve (tokens + usd_micros at agent, group and pool levels) + settle, single-threaded");
    run(pairs / 10, None);
    report("core only", pairs, run(pairs, None));
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("bench.db")).unwrap();
    for batch in [1, 8, 64] {
        run(pairs / 20, Some((&mut s, batch)));
        let n = if batch == 1 { pairs / 4 } else { pairs };
        report(&format!("core + store, {batch} pairs a transaction"), n, run(n, Some((&mut s, batch))));
    }
}
