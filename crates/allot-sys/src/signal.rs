//! Signals to a whole process tree, and a SIGSTOP/SIGCONT duty cycle that
//! throttles CPU without cgroups.

use crate::error::SysError;
use rustix::process::{Pid, Signal, kill_process};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn pid(p: u32) -> Result<Pid, SysError> {
    i32::try_from(p)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| SysError::Sys { call: format!("kill({p})"), source: std::io::Error::from_raw_os_error(22) })
}

/// Send `sig` to every pid; returns how many were signalled (gone ones are skipped).
pub fn signal_all(pids: &[u32], sig: Signal) -> Result<usize, SysError> {
    let mut n = 0;
    for &p in pids {
        match kill_process(pid(p)?, sig) {
            Ok(()) => n += 1,
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                return Err(SysError::Sys { call: format!("kill({p}, {sig:?})"), source: e.into() });
            }
        }
    }
    Ok(n)
}

/// Whether a process of that pid exists (`kill(pid, 0)`; one of another
/// user, EPERM, exists too). An invalid pid exists not.
pub fn exists(p: u32) -> bool {
    i32::try_from(p)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| !matches!(rustix::process::test_kill_process(p), Err(rustix::io::Errno::SRCH)))
}

/// Throttles a set of processes to `on` out of every `on + off` of wall time
/// by stopping and continuing them, from a thread of its own. Dropping it
/// stops the cycle at once (the thread is woken, not waited out) and
/// continues the processes before the drop returns.
#[derive(Debug)]
pub struct DutyCycle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Sleep for `d` unless `stop` is set (woken by `unpark`); whether to go on.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::park_timeout(until - now);
    }
}

impl DutyCycle {
    /// Start cycling. `pids` is called each period, so new children are caught.
    pub fn start<F>(factor: f64, period: Duration, pids: F) -> DutyCycle
    where
        F: Fn() -> Vec<u32> + Send + 'static,
    {
        let factor = factor.clamp(0.05, 1.0);
        let on = period.mul_f64(factor);
        let off = period.saturating_sub(on);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while nap(&flag, on) {
                if off.is_zero() {
                    continue;
                }
                let _ = signal_all(&pids(), Signal::STOP);
                nap(&flag, off);
                let _ = signal_all(&pids(), Signal::CONT);
            }
            let _ = signal_all(&pids(), Signal::CONT);
        });
        DutyCycle { stop, thread: Some(thread) }
    }
}

impl Drop for DutyCycle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exists_tells_a_live_process_from_a_reaped_one() {
        assert!(exists(std::process::id()));
        assert!(exists(1), "pid 1 lives (EPERM, if not ours, counts as alive)");
        let mut c = std::process::Command::new("true").spawn().unwrap_or_else(|e| panic!("spawn true: {e}"));
        let pid = c.id();
        c.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(!exists(pid));
        assert!(!exists(0) && !exists(u32::MAX), "not a pid");
    }

    #[test]
    fn dropping_a_duty_cycle_does_not_wait_out_its_period() {
        let d = DutyCycle::start(0.5, Duration::from_secs(10), Vec::new);
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        drop(d);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    }
}
