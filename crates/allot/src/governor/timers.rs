//! The governor's own timers (the policy keeps its own): kill at the end of
//! a terminate grace, restart after a backoff, follow-up samples after a
//! kernel notice, and the analytics cadence. Each agent timer carries the
//! incarnation it was set for, so a timer of an agent that exited never
//! acts on a new agent of the same name.

use allot_core::{AgentId, Time};

/// What falls due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimerKind {
    /// The terminate grace ended: kill the tree.
    Kill,
    /// The restart backoff ended: start again.
    Restart,
    /// Sample again shortly after a kernel notice: it may come a moment
    /// before usage crosses the limit as allot measures it. Memory and
    /// processes only: no rate from a few milliseconds.
    Sample,
}

/// One due timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) at: Time,
    pub(super) agent: AgentId,
    pub(super) incarnation: u64,
    pub(super) kind: TimerKind,
}

/// Every pending governor timer.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// By due time (then the order they were set in).
    pending: std::collections::BTreeMap<(Time, u64), Due>,
    /// Each agent's keys in `pending` (forgotten without a scan of every timer).
    by_agent: std::collections::HashMap<AgentId, Vec<(Time, u64)>>,
    /// The order of the next timer set.
    seq: u64,
    /// When analytics run next.
    pub(super) next_analytics: Time,
}

impl Timers {
    /// No timers; analytics first due at `next_analytics`.
    pub(super) fn new(next_analytics: Time) -> Self {
        Timers { pending: std::collections::BTreeMap::new(), by_agent: std::collections::HashMap::new(), seq: 0, next_analytics }
    }

    fn push(&mut self, at: Time, agent: &AgentId, incarnation: u64, kind: TimerKind) {
        self.seq += 1;
        let key = (at, self.seq);
        self.by_agent.entry(agent.clone()).or_default().push(key);
        self.pending.insert(key, Due { at, agent: agent.clone(), incarnation, kind });
    }

    /// Kill `agent` (this incarnation) at `at`.
    pub(super) fn kill(&mut self, at: Time, agent: &AgentId, incarnation: u64) {
        self.push(at, agent, incarnation, TimerKind::Kill);
    }

    /// Restart `agent` at `at`; `incarnation` is the one that exited.
    pub(super) fn restart(&mut self, at: Time, agent: &AgentId, incarnation: u64) {
        self.push(at, agent, incarnation, TimerKind::Restart);
    }

    /// Sample `agent` again at `at`.
    pub(super) fn sample(&mut self, at: Time, agent: &AgentId, incarnation: u64) {
        self.push(at, agent, incarnation, TimerKind::Sample);
    }

    /// The earliest due time, analytics included.
    pub(super) fn next(&self) -> Time {
        self.pending.keys().next().map_or(self.next_analytics, |(at, _)| (*at).min(self.next_analytics))
    }

    /// Take every timer due at or before `now`, in time order.
    pub(super) fn take_due(&mut self, now: Time) -> Vec<Due> {
        let later = self.pending.split_off(&(now.plus(std::time::Duration::from_millis(1)), 0));
        let due: Vec<Due> = std::mem::replace(&mut self.pending, later).into_values().collect();
        for d in &due {
            if let Some(keys) = self.by_agent.get_mut(&d.agent) {
                keys.retain(|(at, _)| *at > now);
                if keys.is_empty() {
                    self.by_agent.remove(&d.agent);
                }
            }
        }
        due
    }

    /// Forget every timer of `agent`.
    pub(super) fn forget(&mut self, agent: &AgentId) {
        for key in self.by_agent.remove(agent).unwrap_or_default() {
            self.pending.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_in_time_order_and_keep_their_incarnation() {
        let a = AgentId::new("a").unwrap_or_else(|_| unreachable!());
        let mut t = Timers::new(Time::from_millis(10_000));
        t.kill(Time::from_millis(300), &a, 2);
        t.sample(Time::from_millis(100), &a, 2);
        t.restart(Time::from_millis(5_000), &a, 1);
        assert_eq!(t.next(), Time::from_millis(100));
        let due = t.take_due(Time::from_millis(400));
        assert_eq!(due.iter().map(|d| (d.kind, d.incarnation)).collect::<Vec<_>>(), [(TimerKind::Sample, 2), (TimerKind::Kill, 2)]);
        assert_eq!(t.next(), Time::from_millis(5_000));
        t.forget(&a);
        assert_eq!(t.next(), Time::from_millis(10_000));
    }

    /// Forgetting one agent among thousands takes its timers only; the rest
    /// fall due in time order, set order within a millisecond.
    #[test]
    fn forgetting_an_agent_takes_only_its_timers() {
        let id = |i: usize| AgentId::new(format!("a{i}")).unwrap_or_else(|_| unreachable!());
        let mut t = Timers::new(Time::from_millis(1_000_000));
        for i in 0..3000 {
            t.kill(Time::from_millis(1000 + (i as u64 % 7)), &id(i), 1);
            t.sample(Time::from_millis(500), &id(i), 1);
        }
        for i in (0..3000).step_by(2) {
            t.forget(&id(i));
        }
        assert_eq!(t.next(), Time::from_millis(500));
        let early = t.take_due(Time::from_millis(999));
        assert_eq!(early.len(), 1500);
        assert!(early.iter().all(|d| d.kind == TimerKind::Sample));
        let odd: Vec<usize> = early.iter().map(|d| d.agent.as_str()[1..].parse().unwrap_or(0)).collect();
        assert_eq!(odd, (1..3000).step_by(2).collect::<Vec<_>>(), "set order within the same millisecond");
        let kills = t.take_due(Time::from_millis(2000));
        assert_eq!(kills.len(), 1500);
        assert!(kills.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        assert!(kills.iter().all(|d| d.agent.as_str()[1..].parse::<usize>().is_ok_and(|i| i % 2 == 1)), "only the agents not forgotten");
        assert_eq!(t.next(), Time::from_millis(1_000_000));
        assert!(t.by_agent.is_empty(), "nothing left indexed");
    }
}
