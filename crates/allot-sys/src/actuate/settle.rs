//! Waiting for the kernel to finish what an actuator wrote: a freeze taking
//! hold, a killed tree emptying. The actuator call only writes and returns a
//! [`Settle`]; the wait (short sleeps, a few milliseconds each) runs where
//! blocking is allowed, such as `tokio::task::spawn_blocking`.

use super::Outcome;
use crate::error::SysError;
use std::time::{Duration, Instant};

/// The longest pause between two looks at the kernel.
const MAX_NAP: Duration = Duration::from_millis(10);

/// One look at whether the kernel has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleStep {
    /// It has: the outcome is final.
    Done,
    /// Not yet; what is still outstanding, for the timeout's message
    /// ("processes [12, 13] still present").
    Pending(String),
}

/// One look: may write again (a further kill round) and record it in the outcome.
type Step = Box<dyn FnMut(&mut Outcome) -> Result<SettleStep, SysError> + Send>;

/// What remains to wait for after an actuator wrote: blocking, meant to run
/// on a blocking thread (`tokio::task::spawn_blocking`), never on the
/// governor's loop. Dropping it unwaited abandons the rest of the work
/// (further kill rounds, the v1 freezer's kill and thaw).
pub struct Settle {
    what: &'static str,
    started: Outcome,
    step: Option<Step>,
}

impl Settle {
    /// Nothing to wait for: the outcome is final.
    pub fn done(outcome: Outcome) -> Settle {
        Settle { what: "nothing", started: outcome, step: None }
    }

    /// Wait for `what` ("freeze", "kill"): `step` looks at the kernel once
    /// and may write more (recorded in the outcome it is given); it is
    /// called until it says [`SettleStep::Done`] or the timeout passes.
    /// `started` is what the actuator call already did.
    pub fn polling<F>(what: &'static str, started: Outcome, step: F) -> Settle
    where
        F: FnMut(&mut Outcome) -> Result<SettleStep, SysError> + Send + 'static,
    {
        Settle { what, started, step: Some(Box::new(step)) }
    }

    /// Whether there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.step.is_none()
    }

    /// What is waited for ("freeze", "kill"; "nothing" when done).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// What was already done (the writes), for the record before the wait ends.
    pub fn started(&self) -> &Outcome {
        &self.started
    }

    /// Wait (blocking, short sleeps) until the kernel has done it or
    /// `timeout` passed ([`SysError::Timeout`]); returns the final outcome
    /// including every write made (such as repeated v1 freeze/kill/thaw
    /// rounds).
    pub fn wait(self, timeout: Duration) -> Result<Outcome, SysError> {
        let Settle { what, started, step } = self;
        let Some(mut step) = step else {
            return Ok(started);
        };
        let mut out = started;
        poll_until(what, timeout, || step(&mut out))?;
        Ok(out)
    }
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle").field("what", &self.what).field("started", &self.started).field("done", &self.is_done()).finish()
    }
}

/// Call `step` until it says done, sleeping briefly in between (1 ms,
/// doubling up to 10 ms); [`SysError::Timeout`] with the last pending
/// detail once `timeout` has passed. The last look is taken at the deadline.
pub(crate) fn poll_until<F>(what: &'static str, timeout: Duration, mut step: F) -> Result<(), SysError>
where
    F: FnMut() -> Result<SettleStep, SysError>,
{
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    loop {
        let detail = match step()? {
            SettleStep::Done => return Ok(()),
            SettleStep::Pending(detail) => detail,
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(SysError::Timeout { what, waited: timeout, detail });
        }
        std::thread::sleep(nap.min(timeout - elapsed));
        nap = (nap * 2).min(MAX_NAP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn a_settle_is_send_and_static() {
        assert_send_static::<Settle>();
    }

    #[test]
    fn done_returns_its_outcome_at_once() {
        let o = Outcome { writes: Vec::new(), detail: "SIGSTOP to 1 process(es)".into() };
        let s = Settle::done(o.clone());
        assert!(s.is_done());
        assert_eq!(s.started(), &o);
        assert_eq!(s.wait(Duration::ZERO).unwrap(), o);
    }

    #[test]
    fn polling_runs_until_done_and_keeps_what_each_step_recorded() {
        let mut n = 0;
        let s = Settle::polling("kill", Outcome::default(), move |out| {
            n += 1;
            out.detail = format!("{n} look(s)");
            Ok(if n < 3 { SettleStep::Pending(format!("look {n}")) } else { SettleStep::Done })
        });
        assert!(!s.is_done());
        assert!(format!("{s:?}").contains("kill"), "{s:?}");
        assert_eq!(s.wait(Duration::from_secs(5)).unwrap().detail, "3 look(s)");
    }

    #[test]
    fn a_condition_that_never_holds_times_out_naming_what_and_how_long() {
        let s = Settle::polling("freeze", Outcome::default(), |_| Ok(SettleStep::Pending("still FREEZING".into())));
        let start = Instant::now();
        let e = s.wait(Duration::from_millis(50)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, SysError::Timeout { what: "freeze", waited, .. } if waited == Duration::from_millis(50)), "{e:?}");
        assert_eq!(e.to_string(), "freeze did not finish within 50ms: still FREEZING");
    }

    #[test]
    fn a_step_error_ends_the_wait() {
        let s = Settle::polling("kill", Outcome::default(), |_| Err(SysError::Unsupported { what: "kill", why: "gone".into() }));
        assert!(matches!(s.wait(Duration::from_secs(5)), Err(SysError::Unsupported { .. })));
    }
}
