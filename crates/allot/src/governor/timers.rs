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
    pending: Vec<Due>,
    /// When analytics run next.
    pub(super) next_analytics: Time,
}

impl Timers {
    /// No timers; analytics first due at `next_analytics`.
    pub(super) fn new(next_analytics: Time) -> Self {
        Timers { pending: Vec::new(), next_analytics }
    }

    fn push(&mut self, at: Time, agent: &AgentId, incarnation: u64, kind: TimerKind) {
        self.pending.push(Due { at, agent: agent.clone(), incarnation, kind });
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
        self.pending.iter().map(|d| d.at).fold(self.next_analytics, Time::min)
    }

    /// Take every timer due at or before `now`, in time order.
    pub(super) fn take_due(&mut self, now: Time) -> Vec<Due> {
        let (mut due, rest): (Vec<Due>, Vec<Due>) = std::mem::take(&mut self.pending).into_iter().partition(|d| d.at <= now);
        self.pending = rest;
        due.sort_by_key(|d| d.at);
        due
    }

    /// Forget every timer of `agent`.
    pub(super) fn forget(&mut self, agent: &AgentId) {
        self.pending.retain(|d| &d.agent != agent);
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
}
