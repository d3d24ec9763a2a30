//! A policy throttle on a budget resource: the agent's reservations admitted at a rate.

use super::super::{Backend, Governor};
use allot_core::budget::WindowSpec;
use allot_core::{AgentId, Resource, Time};
use std::time::Duration;

/// Reservations of one agent on one resource admitted at a rate while the
/// policy throttles it: a reservation takes its amount from a balance that
/// refills at `per_ms`; one is admitted while the balance is not negative
/// (it may go below 0 by the amount), else refused until it is again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Permits {
    /// Units a millisecond.
    per_ms: f64,
    balance: f64,
    /// The most the balance holds: one second's worth.
    cap: f64,
    at: Time,
}

impl Permits {
    fn new(per_window: u64, window: Duration, now: Time) -> Permits {
        let ms = allot_core::time::duration_millis(window).max(1) as f64;
        let per_ms = (per_window.max(1) as f64) / ms;
        let cap = (per_ms * 1000.0).max(1.0);
        Permits { per_ms, balance: cap, cap, at: now }
    }

    fn refill(&mut self, now: Time) {
        let dt = now.as_millis().saturating_sub(self.at.as_millis()) as f64;
        self.balance = (self.balance + dt * self.per_ms).min(self.cap);
        self.at = now;
    }

    /// Admit `amount` now, or say when the balance is back at 0.
    pub(super) fn admit(&mut self, amount: u64, now: Time) -> Result<(), Time> {
        self.refill(now);
        if self.balance < 0.0 {
            let wait = (-self.balance / self.per_ms).ceil() as u64;
            return Err(now.plus(Duration::from_millis(wait.max(1))));
        }
        self.balance -= amount as f64;
        Ok(())
    }

    /// The rate, per second.
    pub(super) fn per_second(&self) -> f64 {
        self.per_ms * 1000.0
    }
}

impl<B: Backend> Governor<B> {
    /// A policy throttle on a resource an agent has a budget on: its
    /// reservations are admitted at `target` per window of its own budget.
    /// `None` when the resource is not a budget resource of the agent.
    pub(in crate::governor) fn throttle_budget(&mut self, id: &AgentId, resource: &Resource, target: u64) -> Option<String> {
        let now = self.clock.now();
        let views = self.budgets.ledger.snapshot_agent(id, now)?;
        let v = views.iter().find(|v| &v.resource == resource)?;
        let window = match v.window {
            WindowSpec::Rolling(r) => r.length(),
            WindowSpec::Calendar(c) => {
                let (start, end) = c.period_at(now);
                Duration::from_millis(end.as_millis().saturating_sub(start.as_millis()))
            }
        };
        let p = Permits::new(target, window, now);
        let text = format!("reservations of {resource} admitted at {:.1} a second ({target} a window of {})", p.per_second(), v.window);
        self.budgets.permits.insert((id.clone(), resource.clone()), p);
        Some(text)
    }

    /// The budget resources whose reservations the policy paces for an
    /// agent, with the rate a second.
    pub(in crate::governor) fn budget_throttles(&self, id: &AgentId) -> Vec<(Resource, f64)> {
        self.budgets.permits.iter().filter(|((a, _), _)| a == id).map(|((_, r), p)| (r.clone(), p.per_second())).collect()
    }

    /// Lift a budget throttle; whether there was one.
    pub(in crate::governor) fn unthrottle_budget(&mut self, id: &AgentId, resource: &Resource) -> bool {
        self.budgets.permits.remove(&(id.clone(), resource.clone())).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_admit_at_their_rate_and_say_when_to_come_back() {
        let t0 = Time::from_secs(1000);
        // 60 a minute: one a second, a balance of 1.
        let mut p = Permits::new(60, Duration::from_secs(60), t0);
        assert_eq!(p.admit(10, t0), Ok(()));
        // The balance is -9: back at 0 after 9 s.
        assert_eq!(p.admit(1, t0), Err(t0.plus(Duration::from_secs(9))));
        assert!(p.admit(1, t0.plus(Duration::from_millis(8_999))).is_err());
        assert_eq!(p.admit(1, t0.plus(Duration::from_secs(9))), Ok(()));
        // Over a long run the admitted amount follows the rate.
        let mut admitted = 0;
        for s in 10..=1010 {
            if p.admit(1, t0.plus(Duration::from_secs(s))).is_ok() {
                admitted += 1;
            }
        }
        assert!((990..=1001).contains(&admitted), "{admitted}");
    }
}
