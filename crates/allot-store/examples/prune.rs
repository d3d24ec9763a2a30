//! How long one retention call takes on a 100,000-row table (rows per call
//! and milliseconds per call, printed): `cargo run --release -p allot-store --example prune`.
#![allow(clippy::unwrap_used)]

use allot_store::{Retention, Store};
use std::time::Instant;

const DAY: u64 = 86_400_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("bench.db")).unwrap();
    let now = 1000 * DAY;
    // 100,000 samples of 100 agents, all older than the 24 h window, then 100,000 inside it.
    for (from, n) in [(now - 3 * DAY, 100_000u64), (now - DAY / 2, 100_000)] {
        let batch: Vec<_> = (0..n).map(|i| (format!("agent-{}", i % 100), "memory".to_owned(), from + i, 1 << 20)).collect();
        s.put_samples(&batch).unwrap();
    }
    let r = Retention::default();
    println!("age: 100,000 expired rows before 100,000 kept, batch {}", r.batch);
    let mut calls = 0;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let rep = s.prune(&r, now).unwrap();
        calls += 1;
        if calls <= 3 || !rep.more {
            println!(
                "  call {calls}: {} rows in {:.1} ms (more: {}, {} pages vacuumed)",
                rep.samples,
                t.elapsed().as_secs_f64() * 1e3,
                rep.more,
                rep.vacuumed_pages
            );
        }
        if !rep.more {
            break;
        }
    }
    println!("  {calls} calls, {:.0} ms in all", started.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let rep = s.prune(&r, now).unwrap();
    println!("  steady state (nothing to delete): {} rows in {:.2} ms", rep.total(), t.elapsed().as_secs_f64() * 1e3);

    let cap = s.used_bytes().unwrap() / 2;
    let r = Retention { max_size: Some(cap), ..Retention::default() };
    println!("size cap: {} -> {} bytes", s.used_bytes().unwrap(), cap);
    let mut calls = 0;
    loop {
        let t = Instant::now();
        let rep = s.prune(&r, now).unwrap();
        calls += 1;
        if calls <= 2 || !rep.more {
            println!("  call {calls}: {} rows for size in {:.1} ms (size {})", rep.for_size, t.elapsed().as_secs_f64() * 1e3, rep.size);
        }
        if !rep.more {
            break;
        }
    }
}
