//! The loop's events and where they come from: one [`Inbox`] whose
//! [`Inbox::next`] waits for whichever comes first.

use super::control::Control;
use super::custom::CustomResult;
use super::settle::Done;
use allot_sys::notify::Notice;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, Interval};

/// Something the governor must handle.
#[derive(Debug)]
pub(super) enum Event {
    /// Time to sample every agent.
    Tick,
    /// The kernel said something about an agent (memory crossed a threshold, a process exited).
    Notice(String, Notice),
    /// A policy or governor timer fell due.
    TimersDue,
    /// A command from the API.
    Control(Control),
    /// A custom handler finished.
    Custom(CustomResult),
    /// A kernel wait (freeze, kill) finished on its blocking thread.
    Settled(Done),
    /// Time to redraw the live view.
    Render,
    /// Stop, for this reason.
    Stop(&'static str),
}

/// Every source of events.
pub(super) struct Inbox {
    tick: Interval,
    render: Interval,
    term: tokio::signal::unix::Signal,
    notices: UnboundedReceiver<(String, Notice)>,
    control: Option<UnboundedReceiver<Control>>,
    custom: UnboundedReceiver<CustomResult>,
    settled: UnboundedReceiver<Done>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("control", &self.control.is_some()).field("deadline", &self.deadline).finish()
    }
}

/// The parts an inbox is made of.
pub(super) struct Sources {
    pub(super) sample_interval: Duration,
    pub(super) notices: UnboundedReceiver<(String, Notice)>,
    pub(super) control: Option<UnboundedReceiver<Control>>,
    pub(super) custom: UnboundedReceiver<CustomResult>,
    pub(super) settled: UnboundedReceiver<Done>,
    pub(super) run_for: Option<Duration>,
    /// SIGTERM, registered earlier by the caller.
    pub(super) term: Option<tokio::signal::unix::Signal>,
}

async fn recv_control(control: &mut Option<UnboundedReceiver<Control>>) -> Control {
    if let Some(rx) = control {
        if let Some(c) = rx.recv().await {
            return c;
        }
    }
    // No API, or it stopped: nothing more will come.
    *control = None;
    std::future::pending().await
}

impl Inbox {
    pub(super) fn new(s: Sources) -> std::io::Result<Self> {
        let mut tick = tokio::time::interval(s.sample_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Inbox {
            tick,
            render: tokio::time::interval(Duration::from_secs(1)),
            term: match s.term {
                Some(t) => t,
                None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
            },
            notices: s.notices,
            control: s.control,
            custom: s.custom,
            settled: s.settled,
            deadline: s.run_for.map(|d| Instant::now() + d.min(super::clock::FAR)),
        })
    }

    /// Whether an API feeds commands in (the daemon): then the loop runs on when every agent has exited.
    pub(super) fn serving(&self) -> bool {
        self.control.is_some()
    }

    /// The next finished kernel wait, within `timeout` (for the stop, after the loop ended).
    pub(super) async fn settled_within(&mut self, timeout: Duration) -> Option<Done> {
        tokio::time::timeout(timeout, self.settled.recv()).await.ok().flatten()
    }

    /// The next command (pending forever without an API).
    pub(super) async fn control(&mut self) -> Control {
        recv_control(&mut self.control).await
    }

    /// A kernel notice that waits already, without waiting (a long tick
    /// looks for them between its parts, see `Governor::urgent`).
    pub(super) fn try_notice(&mut self) -> Option<(String, Notice)> {
        self.notices.try_recv().ok()
    }

    /// A command that waits already, without waiting.
    pub(super) fn try_control(&mut self) -> Option<Control> {
        self.control.as_mut()?.try_recv().ok()
    }

    /// The next event; `timer` is when the earliest timer falls due.
    pub(super) async fn next(&mut self, timer: Instant) -> Event {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            _ = self.tick.tick() => Event::Tick,
            _ = tokio::time::sleep_until(timer) => Event::TimersDue,
            Some((agent, notice)) = self.notices.recv() => Event::Notice(agent, notice),
            Some(res) = self.custom.recv() => Event::Custom(res),
            Some(done) = self.settled.recv() => Event::Settled(done),
            c = recv_control(&mut self.control) => Event::Control(c),
            _ = self.render.tick() => Event::Render,
            _ = tokio::signal::ctrl_c() => Event::Stop("interrupted (Ctrl-C)"),
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = tokio::time::sleep_until(self.deadline.unwrap_or(far)), if self.deadline.is_some() => Event::Stop("--for elapsed"),
        }
    }
}
