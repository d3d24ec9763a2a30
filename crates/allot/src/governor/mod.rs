//! The governor: one event loop, in the rust-analyzer style, that owns all
//! governor state. [`event::Inbox::next`] waits for the next
//! [`event::Event`] (sample tick, kernel notice, timer due, control request,
//! custom-handler result, settled kernel wait, render, stop) and `handle`
//! dispatches it to the module that owns that work.
//!
//! Every change to an agent is an [`intent::Intent`] carried out by
//! `intent::apply` (the one place that calls actuators), whose typed outcome
//! is recorded and published (`record`). Kernel waits (freeze, kill) settle
//! on blocking threads (`settle`), never on the loop. Waits are timers,
//! never sleeps.
//!
//! Parts, each owning its fields: `agents` (definition, process,
//! lifecycle, holds), `Domain` (the core ledger, policy and alert limiter),
//! `timers`, `record::Recorder` (store, events file, metrics),
//! `sampling::Sampler`, `analysis::Analysis`, `settle::Settles`.

mod agents;
mod analysis;
pub mod backend;
mod backstops;
pub mod budgets;
pub mod channel;
pub mod clock;
pub(crate) mod cluster;
pub mod control;
mod custom;
mod enforce;
mod event;
mod intent;
mod lifecycle;
mod pressure;
mod record;
mod recovery;
mod retention;
mod sampling;
mod settle;
mod stop;
mod timers;
mod view;

use crate::fleet::{Fleet, Settings};
use crate::metrics::{AgentSnapshot, Metrics};
use agents::{Agent, Agents};
use allot_core::alerts::AlertLimiter;
use allot_core::{AgentId, Ledger, Policy, Time, events};
use allot_store::Store;
use backend::Backend;
use channel::Channel;
use clock::Clock;
use event::{Event, Inbox, Sources};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How `allot up` shows progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewMode {
    /// Redraw a table every second (a terminal).
    Live,
    /// Print events as lines and a table every 10 s (a pipe or file).
    Plain,
    /// Print nothing but errors.
    Quiet,
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The state database.
    pub state: PathBuf,
    /// Also write every event as a JSON line here.
    pub events_file: Option<PathBuf>,
    /// Stop after this long.
    pub run_for: Option<Duration>,
    /// Output.
    pub view: ViewMode,
    /// Name of allot's cgroup beneath its own (default `allot`).
    pub cgroup_name: String,
    /// Use kernel notifications to sample at once (default true).
    pub notify: bool,
    /// The daemon's socket, given to agents as `ALLOT_SOCKET`.
    pub socket: Option<PathBuf>,
    /// Take over the live agents a previous run left (the daemon), instead of stopping them (`allot up`).
    pub readopt: bool,
    /// On stop, leave agents running under their kernel limits (the daemon) instead of stopping them.
    pub leave_running: bool,
}

/// Errors that stop a run before it starts.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Summary of a finished run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Events published.
    pub events: u64,
    /// How each agent ended.
    pub exits: BTreeMap<String, String>,
}

/// The pure domain state: quotas and usage, the enforcement policy, the alert limiter.
#[derive(Debug)]
struct Domain {
    ledger: Ledger,
    policy: Policy,
    alerts: AlertLimiter,
    /// Escalations a previous governor scheduled, resumed at the first fresh sample of their resource.
    restored: std::collections::BTreeMap<(allot_core::AgentId, allot_core::Resource), (allot_core::Action, allot_core::Time)>,
}

/// Receivers the loop takes over when it starts.
struct Pending {
    custom_rx: mpsc::UnboundedReceiver<custom::CustomResult>,
    settled_rx: mpsc::UnboundedReceiver<settle::Done>,
    control: Option<mpsc::UnboundedReceiver<control::Control>>,
    /// Notices given by the caller instead of the kernel's.
    notices: Option<mpsc::UnboundedReceiver<(String, allot_sys::notify::Notice)>>,
    /// SIGTERM caught from before the API listened (else from when the loop starts).
    term: Option<tokio::signal::unix::Signal>,
}

/// The governor.
pub struct Governor<B: Backend> {
    backend: B,
    settings: Settings,
    clock: Clock,
    domain: Domain,
    budgets: budgets::BudgetPart,
    agents: Agents,
    timers: timers::Timers,
    recorder: record::Recorder,
    sampler: sampling::Sampler,
    analysis: analysis::Analysis,
    retention: retention::Pruning,
    settles: settle::Settles,
    /// Agents suspended by host memory pressure, oldest first.
    pressure_held: Vec<AgentId>,
    custom_tx: mpsc::UnboundedSender<custom::CustomResult>,
    notifier: Option<allot_sys::notify::Notifier>,
    pending: Option<Pending>,
    view: ViewMode,
    notify: bool,
    leave_running: bool,
    /// Stop when every agent has exited, also while an API feeds commands in (`allot up`).
    until_all_exit: bool,
    /// Why the fleet is being stopped, once it is: no agent is started after that.
    stopping: Option<String>,
    /// Cluster mode: this node's slices of the cluster totals.
    cluster: Option<cluster::ClusterPart>,
}

impl<B: Backend> std::fmt::Debug for Governor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor").field("mode", &self.backend.mode()).field("agents", &self.agents.map.len()).finish()
    }
}

impl<B: Backend> Governor<B> {
    /// Prepare a run: open the store, take over or stop what a previous run
    /// left behind, register the fleet.
    pub fn new(fleet: Fleet, backend: B, opts: &Options) -> Result<Self, Error> {
        let store = Store::open(&opts.state)?;
        if let Some(mode) = store.readable_by_others() {
            tracing::warn!(
                state = %opts.state.display(),
                mode = format!("{mode:o}"),
                "the state database is readable by other users: every agent's samples and history are in it (chmod 600 it)"
            );
        }
        let events_out = match &opts.events_file {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?)),
            None => None,
        };
        let state_dir = opts.state.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
        // Absolute, so agents with another working directory find their channel.
        let channel_dir = std::path::absolute(&state_dir).unwrap_or(state_dir).join("agents");
        let (custom_tx, custom_rx) = mpsc::unbounded_channel();
        let (settles, settled_rx) = settle::Settles::new();
        let clock = Clock::start();
        let mut g = Governor {
            backend,
            domain: Domain {
                ledger: fleet.ledger.clone(),
                policy: Policy::new(fleet.settings.policy.clone()),
                alerts: AlertLimiter::default(),
                restored: std::collections::BTreeMap::new(),
            },
            budgets: budgets::BudgetPart::new(fleet.pools.clone()),
            settings: fleet.settings.clone(),
            clock,
            agents: Agents::new(channel_dir, opts.socket.clone()),
            timers: timers::Timers::new(clock.now().plus(fleet.settings.analytics_interval)),
            recorder: record::Recorder::new(store, events_out, opts.view),
            sampler: sampling::Sampler::default(),
            analysis: analysis::Analysis::default(),
            retention: retention::Pruning::new(fleet.retention.clone(), clock.now()),
            settles,
            pressure_held: Vec::new(),
            custom_tx,
            notifier: None,
            pending: Some(Pending { custom_rx, settled_rx, control: None, notices: None, term: None }),
            view: opts.view,
            notify: opts.notify,
            leave_running: opts.leave_running,
            until_all_exit: false,
            stopping: None,
            cluster: None,
        };
        if opts.readopt {
            // Groups created or changed through the API first: agents' stored quotas resolve against them.
            g.load_stored_groups();
            g.readopt_leftovers()?;
        }
        g.recover_leftovers()?;
        let me = rustix::process::geteuid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        for mut def in fleet.agents {
            // Unset in the fleet file: allot's own user, or nobody when allot runs as root.
            def.user.get_or_insert_with(|| crate::fleet::default_user(me, &passwd));
            if g.agents.get(&def.spec.id).is_some() {
                continue; // adopted: it runs already
            }
            // Moved to another node by a migrate: it runs there, not again here.
            if let Ok(Some(stored)) = g.recorder.store.agent(def.spec.id.as_str()) {
                if stored.state == "exited" && stored.exit.as_deref().is_some_and(|e| e.contains(cluster::MIGRATED_TO)) {
                    tracing::warn!(agent = %def.spec.id, exit = stored.exit.as_deref().unwrap_or(""), "not started: it was migrated to another node (start it through the API to run it here again)");
                    continue;
                }
            }
            let channel = Channel::create(&g.agents.channel_dir, def.spec.id.as_str(), def.notify_signal)?;
            g.agents.map.insert(def.spec.id.clone(), Agent::new(def, channel));
        }
        // Budgets: configured from the quotas, groups and pools, then their spend
        // and open reservations taken over from the store.
        g.load_stored_pools()?;
        g.sync_budgets();
        g.load_budgets()?;
        Ok(g)
    }

    /// Take commands (the daemon's API) from this channel while running.
    pub fn with_control(mut self, rx: mpsc::UnboundedReceiver<control::Control>) -> Self {
        if let Some(p) = self.pending.as_mut() {
            p.control = Some(rx);
        }
        self
    }

    /// With an API (`with_control`), still stop when every agent has exited
    /// and keep every agent to the end for the summary, as `allot up` does.
    pub fn until_all_exit(mut self) -> Self {
        self.until_all_exit = true;
        self
    }

    /// Stop on SIGTERM caught by `term`, registered before the API listens:
    /// a SIGTERM sent as soon as the socket accepts (before the loop starts)
    /// stops the governor cleanly instead of killing the process.
    pub fn with_term(mut self, term: tokio::signal::unix::Signal) -> Self {
        if let Some(p) = self.pending.as_mut() {
            p.term = Some(term);
        }
        self
    }

    /// Take kernel notices from this channel instead of the kernel's own
    /// (tests drive the notice path with it; `notify` is then ignored).
    pub fn with_notices(mut self, rx: mpsc::UnboundedReceiver<(String, allot_sys::notify::Notice)>) -> Self {
        if let Some(p) = self.pending.as_mut() {
            p.notices = Some(rx);
        }
        self
    }

    /// The metrics this governor keeps up to date, for `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.recorder.metrics)
    }

    /// How often agents are sampled.
    pub fn sample_interval(&self) -> Duration {
        self.settings.sample_interval
    }

    /// The mode in force (cgroups or process trees), for the user.
    pub fn mode(&self) -> String {
        self.backend.mode()
    }

    /// Run until every agent has exited (without an API), the time is up, or a signal stops us.
    pub async fn run(mut self, run_for: Option<Duration>) -> Result<Summary, Error> {
        let mut pending = self.pending.take().ok_or("the governor runs once")?;
        let notices = match pending.notices.take() {
            Some(rx) => rx,
            None => self.start_notifier(),
        };
        let mut inbox = Inbox::new(Sources {
            sample_interval: self.settings.sample_interval,
            notices,
            control: pending.control,
            custom: pending.custom_rx,
            settled: pending.settled_rx,
            run_for,
            term: pending.term,
        })?;
        for id in self.agents.ids() {
            if self.agents.get(&id).is_some_and(|a| a.proc.is_some()) {
                // Taken over from a previous run: the kernel is told what the holds kept are.
                self.watch(&id);
                self.reconcile(&id);
            } else if let Err(e) = self.start_agent(&id) {
                let now = self.clock.now();
                self.mark_exited(&id, &format!("could not start: {e}"), now);
            }
        }
        self.refresh_metrics();
        let reason = loop {
            let timer = self.clock.instant(self.next_due());
            let event = inbox.next(timer).await;
            if let Some(reason) = self.handle(event, &mut inbox) {
                break reason;
            }
            // Commands already waiting are handled (without waiting on every
            // source again) before the budget changes they make are recorded in
            // one transaction (group commit); at most a batch, so timers and
            // ticks are not kept waiting.
            let mut stop = None;
            for _ in 0..budgets::BATCH {
                if self.budgets.pending() >= budgets::BATCH {
                    break;
                }
                let Some(c) = inbox.try_control() else { break };
                if let Some(reason) = self.handle(Event::Control(c), &mut inbox) {
                    stop = Some(reason);
                    break;
                }
            }
            self.flush_budgets();
            if let Some(reason) = stop {
                break reason;
            }
        };
        // Kernel waits in flight are recorded before the governor stops.
        while self.settles.in_flight() > 0 {
            match inbox.settled_within(allot_sys::actuate::SETTLE_TIMEOUT + Duration::from_secs(1)).await {
                Some(done) => self.settled(done),
                None => break,
            }
        }
        self.shutdown(reason, &mut inbox).await;
        let exits = self.agents.map.iter().map(|(id, a)| (id.to_string(), a.state_text())).collect();
        Ok(Summary { events: self.recorder.store.last_seq().unwrap_or(0), exits })
    }

    fn start_notifier(&mut self) -> mpsc::UnboundedReceiver<(String, allot_sys::notify::Notice)> {
        if self.notify {
            match allot_sys::notify::Notifier::start() {
                Ok((n, rx)) => {
                    self.notifier = Some(n);
                    return rx;
                }
                Err(e) => tracing::warn!(error = %e, "kernel notifications unavailable; sampling only"),
            }
        }
        mpsc::unbounded_channel().1
    }

    /// Handle one event; `Some(reason)` stops the loop.
    fn handle(&mut self, event: Event, inbox: &mut Inbox) -> Option<&'static str> {
        let serving = inbox.serving();
        match event {
            Event::Tick => {
                self.tick(inbox);
                // `allot up` with its API keeps every agent to the end and stops when they have exited.
                let daemon = serving && !self.until_all_exit;
                self.retain(daemon);
                if !daemon && self.agents.map.values().all(Agent::is_exited) {
                    return Some("every agent has exited");
                }
            }
            Event::TimersDue => self.fire_timers(),
            Event::Notice(agent, notice) => self.notice(&agent, &notice),
            Event::Control(c) => self.handle_control(c),
            Event::Custom(res) => self.custom_done(res),
            Event::Settled(done) => self.settled(done),
            Event::Render => self.render(),
            Event::Stop(reason) => return Some(reason),
        }
        None
    }

    /// Kernel notices that came while the loop was busy (a tick over many
    /// agents) are handled now, between two parts of that work, so a notice
    /// waits for at most one part (a few dozen agents, or one store
    /// transaction of samples), not for the whole tick.
    fn urgent(&mut self, inbox: &mut Inbox) {
        while let Some((agent, notice)) = inbox.try_notice() {
            self.notice(&agent, &notice);
        }
    }

    /// A kernel notice: sample at once (and again shortly, for memory), see who exited.
    fn notice(&mut self, agent: &str, notice: &allot_sys::notify::Notice) {
        use allot_sys::notify::Notice;
        let Ok(id) = AgentId::new(agent) else { return };
        let Some(incarnation) = self.agents.get(&id).map(|a| a.incarnation) else { return };
        self.sample(&id, sampling::Reading::FollowUp);
        if matches!(notice, Notice::MemoryThreshold { .. } | Notice::MemoryEvents(_)) {
            let now = self.clock.now();
            for ms in [5, 20, 50, 100] {
                self.timers.sample(now.plus(Duration::from_millis(ms)), &id, incarnation);
            }
        }
        self.reap();
    }

    /// The earliest of the policy's and the governor's timers.
    fn next_due(&self) -> Time {
        let own = self.timers.next();
        let own = self.budgets.ledger.next_expiry().map_or(own, |e| e.min(own));
        self.domain.policy.next_due().map_or(own, |p| p.min(own))
    }

    fn fire_timers(&mut self) {
        let now = self.clock.now();
        let decisions = self.domain.policy.advance(now);
        self.execute_all(decisions);
        self.expire_budgets(now);
        if now >= self.timers.next_analytics {
            self.timers.next_analytics = now.plus(self.settings.analytics_interval);
            self.run_analytics(now);
        }
        for due in self.timers.take_due(now) {
            match due.kind {
                timers::TimerKind::Kill => self.grace_over(&due.agent, due.incarnation, due.at),
                timers::TimerKind::Restart => self.restart(&due.agent, due.incarnation, due.at),
                timers::TimerKind::Sample => {
                    if self.agents.current(&due.agent, due.incarnation).is_some() {
                        self.sample(&due.agent, sampling::Reading::FollowUp);
                    }
                }
            }
        }
        self.reap();
    }

    /// Every agent's and group's figures into the metrics.
    fn refresh_metrics(&self) {
        let ledger = &self.domain.ledger;
        let agents = self
            .agents
            .map
            .iter()
            .map(|(id, a)| {
                let usage = a.usage.iter().map(|(r, v)| (r.name().to_owned(), r.unit().name().to_owned(), *v)).collect();
                let limits = ledger
                    .quota(id)
                    .map(|q| q.limits.iter().map(|(r, l)| (r.name().to_owned(), l.soft, l.hard, l.burst)).collect())
                    .unwrap_or_default();
                (id.to_string(), AgentSnapshot { group: a.def.spec.group.clone(), state: a.state_name().to_owned(), usage, limits })
            })
            .collect();
        self.recorder.metrics.agents(agents);
        let groups = ledger
            .groups()
            .map(|g| {
                let mut usage: BTreeMap<String, u64> = BTreeMap::new();
                for m in ledger.members(&g.name) {
                    for (r, v) in self.agents.get(m).map(|a| &a.usage).into_iter().flatten() {
                        // Saturating: a custom resource's reported usage can be anything up to u64::MAX.
                        let sum = usage.entry(r.name().to_owned()).or_default();
                        *sum = sum.saturating_add(*v);
                    }
                }
                let totals = g.totals.iter().map(|(r, v)| (r.name().to_owned(), *v)).collect();
                (g.name.clone(), (usage, totals))
            })
            .collect();
        self.recorder.metrics.groups(groups);
    }

    fn render(&mut self) {
        if self.view == ViewMode::Quiet {
            return;
        }
        let rows: Vec<view::Row> = self
            .agents
            .map
            .iter()
            .map(|(id, a)| view::Row {
                agent: id.to_string(),
                group: a.def.spec.group.clone(),
                state: match a.exit_reason() {
                    Some(why) => format!("exited: {why}"),
                    None => a.state_name().to_owned(),
                },
                usage: a.usage.clone(),
                last_action: a.last_action.clone(),
            })
            .collect();
        let mode = match &self.agents.socket {
            Some(sock) => format!("{}; API on {}", self.backend.mode(), sock.display()),
            None => self.backend.mode(),
        };
        match self.view {
            ViewMode::Live => view::live(&mode, &rows, &self.recorder.recent),
            ViewMode::Plain if self.sampler.tick % 10 == 0 => view::plain(&rows),
            _ => {}
        }
    }

    async fn shutdown(&mut self, why: &str, inbox: &mut Inbox) {
        self.flush_budgets();
        let now = self.clock.now();
        if self.leave_running {
            // The daemon stops alone: its agents keep running under their kernel
            // limits, and the next daemon on this state takes them over.
            self.run_analytics(now);
            self.flush_samples();
            self.flush_rollups();
            let live = self.agents.map.values().filter(|a| a.proc.is_some()).count();
            self.recorder.emit(now, events::GOVERNOR_STOPPED, None, json!({"reason": why, "agents_left_running": live}));
            // Removes only the group and root cgroups that no agent uses any more.
            self.backend.shutdown();
            return;
        }
        // The last analysis sees every sample, while the agents' quotas are still registered.
        self.run_analytics(now);
        self.stop_all(why, inbox).await;
        self.flush_samples();
        self.flush_rollups();
        self.backend.shutdown();
        self.render();
    }
}
