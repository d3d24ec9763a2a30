//! Leased grants of a cluster-wide total (SPEC: cluster mode; the etcd
//! ledger of issue 15), as pure arithmetic: no I/O, time passed in.
//!
//! A [`GrantLedger`] is what the cluster stores for one total (a group's
//! memory over every host, a team's tokens per minute): the total, and per
//! node the slice granted to it under that node's lease. A node changes its
//! own slice only ([`GrantLedger::resize`]): it may always shrink, and grow
//! only into what is free, so a change never makes the slices' sum exceed
//! the total. A lower total cuts nobody's slice (each node returns slack
//! itself) and grants nothing until the sum is under it again. The slices
//! of a node whose lease is gone return to the pool
//! ([`GrantLedger::release_dead`]); never before.
//!
//! A node enforces its slice locally. [`Holding`] says what it may use at a
//! time: its slice until its deadline (its last successful keepalive + the
//! lease's TTL - a margin: by then the cluster may have given the slice to
//! others), then a safe capacity it was configured with. [`ask`] sizes the
//! next request from the node's demand, in chunks, so that no cluster call
//! is made per reservation.

use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One node's slice of a total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// What it may use.
    pub granted: u64,
    /// The lease it holds the slice under.
    pub lease: i64,
}

/// A dead node's slice kept out of the pool for a time: what it spent of a
/// budget stays counted in the budget's window after the node is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The node that held it.
    pub node: String,
    /// How much.
    pub amount: u64,
    /// Until when (milliseconds of the shared wall clock).
    pub until: Time,
}

/// A cluster-wide total and the slices granted of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantLedger {
    /// The total.
    pub total: u64,
    /// Slices by node name.
    pub slices: BTreeMap<String, Slice>,
    /// Slices of dead nodes not yet back in the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
}

impl GrantLedger {
    /// A total with nothing granted.
    pub fn new(total: u64) -> Self {
        GrantLedger { total, slices: BTreeMap::new(), held: Vec::new() }
    }

    /// The sum of the slices (those of dead nodes still held included).
    pub fn granted(&self) -> u64 {
        let held = self.held.iter().fold(0u64, |a, h| a.saturating_add(h.amount));
        self.slices.values().fold(held, |a, s| a.saturating_add(s.granted))
    }

    /// What no node holds (zero while a lowered total is still over-granted).
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.granted())
    }

    /// `node` (holding lease `lease`) asks for its slice to become `want`:
    /// a shrink is granted whole, a growth up to what is free. Returns the
    /// slice now granted. A node whose slice was held under another lease
    /// (an earlier run of it) starts from that slice under the new lease.
    pub fn resize(&mut self, node: &str, want: u64, lease: i64) -> u64 {
        let had = self.slices.get(node).map_or(0, |s| s.granted);
        let granted = if want <= had { want } else { had + (want - had).min(self.free()) };
        if granted == 0 {
            self.slices.remove(node);
        } else {
            self.slices.insert(node.to_owned(), Slice { granted, lease });
        }
        granted
    }

    /// Take every slice held under a lease not in `alive` (the cluster's
    /// live leases) from its node: back to the pool at once (`keep`
    /// `None`: a kernel total, whose use ends with the node), or held until
    /// `now + keep` (a budget: what the node spent stays counted for its
    /// window). Returns the nodes and what each held.
    pub fn release_dead(&mut self, alive: &BTreeSet<i64>, now: Time, keep: Option<Duration>) -> Vec<(String, u64)> {
        let dead: Vec<(String, u64)> =
            self.slices.iter().filter(|(_, s)| !alive.contains(&s.lease)).map(|(n, s)| (n.clone(), s.granted)).collect();
        for (n, amount) in &dead {
            self.slices.remove(n);
            if let Some(keep) = keep {
                self.held.push(Held { node: n.clone(), amount: *amount, until: now.plus(keep) });
            }
        }
        dead
    }

    /// Return to the pool the held slices whose time is over; what returned.
    pub fn expire_held(&mut self, now: Time) -> u64 {
        let before = self.granted();
        self.held.retain(|h| h.until > now);
        before - self.granted()
    }
}

/// What a node holds of one total, and until when it may rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Its slice, as last granted.
    pub slice: u64,
    /// Its last successful keepalive.
    pub renewed: Time,
    /// The lease's time to live.
    pub ttl: Duration,
    /// Kept before the lease's end: clocks and delays between the node and the cluster.
    pub margin: Duration,
    /// What it falls to after its deadline.
    pub safe: u64,
}

impl Holding {
    /// Until when the slice is the node's: its last keepalive + TTL - margin.
    pub fn deadline(&self) -> Time {
        self.renewed.plus(self.ttl.saturating_sub(self.margin))
    }

    /// What the node may use at `now`: its slice before the deadline, then
    /// the safe capacity (never more than the slice).
    pub fn usable(&self, now: Time) -> u64 {
        if now < self.deadline() { self.slice } else { self.safe.min(self.slice) }
    }
}

/// The slice a node should ask for next, given what it uses now (`used`,
/// reserved or resident) and its slice: one `chunk` more when less than half
/// a chunk is left, back to `used` + one chunk when more than two chunks are
/// idle (slack returned), else none (`None`: no cluster call).
pub fn ask(slice: u64, used: u64, chunk: u64) -> Option<u64> {
    let chunk = chunk.max(1);
    let left = slice.saturating_sub(used);
    if left < chunk.div_ceil(2) {
        return Some(used.saturating_add(chunk).max(slice));
    }
    if left > chunk.saturating_mul(2) {
        return Some(used.saturating_add(chunk));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_growth_takes_only_what_is_free_and_a_shrink_is_whole() {
        let mut l = GrantLedger::new(100);
        assert_eq!(l.resize("a", 60, 1), 60);
        assert_eq!(l.resize("b", 60, 2), 40, "only 40 free");
        assert_eq!(l.free(), 0);
        assert_eq!(l.resize("a", 10, 1), 10);
        assert_eq!(l.resize("b", 90, 2), 90);
        assert_eq!(l.resize("a", 0, 1), 0);
        assert!(!l.slices.contains_key("a"));
        l.total = 50;
        assert_eq!(l.resize("c", 5, 3), 0, "a lowered total grants nothing while over-granted");
        assert_eq!(l.slices["b"].granted, 90, "and cuts nobody");
    }

    #[test]
    fn a_dead_lease_s_slices_return_only_when_it_is_gone() {
        let mut l = GrantLedger::new(100);
        l.resize("a", 50, 1);
        l.resize("b", 50, 2);
        let t = Time::from_secs(100);
        assert!(l.release_dead(&BTreeSet::from([1, 2]), t, None).is_empty());
        assert_eq!(l.release_dead(&BTreeSet::from([2]), t, None), vec![("a".to_owned(), 50)]);
        assert_eq!(l.free(), 50);
    }

    #[test]
    fn a_dead_node_s_budget_slice_is_held_for_the_window() {
        let mut l = GrantLedger::new(100);
        l.resize("a", 60, 1);
        l.resize("b", 40, 2);
        let t = Time::from_secs(100);
        assert_eq!(l.release_dead(&BTreeSet::from([2]), t, Some(Duration::from_secs(60))), vec![("a".to_owned(), 60)]);
        assert_eq!(l.free(), 0, "what a spent may still count in the window");
        assert_eq!(l.resize("b", 100, 2), 40);
        assert_eq!(l.expire_held(Time::from_secs(159)), 0);
        assert_eq!(l.expire_held(Time::from_secs(160)), 60);
        assert_eq!(l.resize("b", 100, 2), 100);
    }

    #[test]
    fn a_node_holds_its_slice_until_its_deadline_then_its_safe_capacity() {
        let h = Holding {
            slice: 1000,
            renewed: Time::from_millis(10_000),
            ttl: Duration::from_secs(10),
            margin: Duration::from_secs(2),
            safe: 100,
        };
        assert_eq!(h.deadline(), Time::from_millis(18_000));
        assert_eq!(h.usable(Time::from_millis(17_999)), 1000);
        assert_eq!(h.usable(Time::from_millis(18_000)), 100);
        assert_eq!(Holding { safe: 5000, ..h }.usable(Time::from_millis(20_000)), 1000, "never more than the slice");
    }

    #[test]
    fn requests_come_in_chunks_with_slack_returned() {
        assert_eq!(ask(0, 0, 100), Some(100));
        assert_eq!(ask(100, 60, 100), Some(160));
        assert_eq!(ask(100, 40, 100), None);
        assert_eq!(ask(1000, 100, 100), Some(200), "slack returned");
        assert_eq!(ask(240, 40, 100), None, "two chunks idle is kept");
        assert_eq!(ask(250, 40, 100), Some(140));
    }

    proptest! {
        /// Whatever nodes ask, in whatever order, with leases dying and the
        /// total changing: no resize makes the sum exceed the total when it
        /// did not already, a lowered total cuts nobody, and a slice changes
        /// only by its own node's resize or its lease's death.
        #[test]
        fn no_grant_makes_the_slices_exceed_the_total(
            total in 0u64..10_000,
            ops in proptest::collection::vec((0usize..5, 0u64..6_000, 0u8..10, 0u64..10_000), 1..200),
        ) {
            let nodes = ["a", "b", "c", "d", "e"];
            let mut l = GrantLedger::new(total);
            let mut alive: BTreeSet<i64> = (0..5).collect();
            for (n, want, kind, new_total) in ops {
                let before = l.clone();
                match kind {
                    0 => { alive.remove(&(n as i64)); let _ = l.release_dead(&alive, Time::from_secs(new_total), (want % 2 == 0).then_some(Duration::from_secs(want))); alive.insert(n as i64); let _ = l.expire_held(Time::from_secs(new_total / 2)); }
                    1 => l.total = new_total,
                    _ => { let got = l.resize(nodes[n], want, n as i64); prop_assert!(got <= want.max(before.slices.get(nodes[n]).map_or(0, |s| s.granted))); }
                }
                if kind != 1 && before.granted() <= before.total {
                    prop_assert!(l.granted() <= l.total, "{before:?} -> {l:?}");
                }
                if kind == 1 {
                    prop_assert_eq!(&l.slices, &before.slices);
                }
                if kind >= 2 {
                    for (other, s) in &before.slices {
                        if other != nodes[n] { prop_assert_eq!(l.slices.get(other), Some(s)); }
                    }
                    prop_assert!(l.granted() <= before.granted() || l.granted() <= l.total);
                }
            }
        }
    }
}
