//! The governor runtime: one explicit event loop over sampling ticks, kernel
//! notifications, policy timers, grace and restart timers, custom-handler
//! results, and shutdown. Each sample goes to the core ledger and policy;
//! each decision goes to an actuator; each outcome is recorded in the store
//! and published as an event. Waits are timers, never sleeps.

pub mod backend;
pub mod channel;
pub mod clock;
pub mod control;
mod execute;
mod view;

use crate::fleet::{AgentDef, Fleet, Restart, Settings};
use allot_core::alerts::{AlertLimiter, Threshold};
use allot_core::events;
use allot_core::{AgentId, Decision, Ledger, Policy, Resource, Time};
use allot_store::Store;
use allot_store::rollup::Roller;
use backend::{Backend, Started};
use channel::Channel;
use clock::Clock;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
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

/// Where an agent is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Running normally.
    Running,
    /// Running under a throttle.
    Throttled,
    /// Frozen.
    Suspended,
    /// Told to stop; killed when its grace ends.
    Terminating,
    /// Waiting for a restart.
    Restarting,
    /// Gone, with the reason.
    Exited(String),
}

impl AgentState {
    fn name(&self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Throttled => "throttled",
            AgentState::Suspended => "suspended",
            AgentState::Terminating => "terminating",
            AgentState::Restarting => "restarting",
            AgentState::Exited(_) => "exited",
        }
    }
}

/// A counter turned into a rate per second.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    last: Option<(u64, Time)>,
}

impl Rate {
    fn update(&mut self, value: u64, at: Time) -> Option<u64> {
        let (v0, t0) = self.last.replace((value, at))?;
        let dt = at.as_millis().checked_sub(t0.as_millis()).filter(|d| *d > 0)?;
        Some(u64::try_from(u128::from(value.saturating_sub(v0)) * 1000 / u128::from(dt)).unwrap_or(u64::MAX))
    }
}

pub(super) struct Running {
    def: AgentDef,
    started: Option<Started>,
    state: AgentState,
    cpu: Rate,
    io: Rate,
    net: Rate,
    usage: BTreeMap<Resource, u64>,
    last_action: String,
    restarts: u32,
    channel: Channel,
    terminating: Option<String>,
}

impl Running {
    /// An agent not started yet (or started just after).
    fn new(def: AgentDef, channel: Channel) -> Self {
        Running {
            def,
            started: None,
            state: AgentState::Restarting,
            cpu: Rate::default(),
            io: Rate::default(),
            net: Rate::default(),
            usage: BTreeMap::new(),
            last_action: String::new(),
            restarts: 0,
            channel,
            terminating: None,
        }
    }
}

enum Timer {
    Kill(AgentId),
    Restart(AgentId),
    /// A follow-up sample shortly after a kernel notice: the notice may come
    /// a moment before usage crosses the limit as allot measures it.
    Sample(AgentId),
}

/// What a custom handler reported back.
struct CustomResult {
    decision: Decision,
    outcome: &'static str,
    detail: String,
}

/// The governor.
pub struct Governor<B: Backend> {
    backend: B,
    settings: Settings,
    ledger: Ledger,
    policy: Policy,
    alerts: AlertLimiter,
    store: Store,
    events_out: Option<std::io::BufWriter<std::fs::File>>,
    clock: Clock,
    agents: BTreeMap<AgentId, Running>,
    timers: Vec<(Time, Timer)>,
    roller: Roller,
    channel_dir: PathBuf,
    view: ViewMode,
    recent: VecDeque<String>,
    tick: u64,
    custom_tx: mpsc::UnboundedSender<CustomResult>,
    custom_rx: mpsc::UnboundedReceiver<CustomResult>,
    host_suspended: BTreeSet<AgentId>,
    notify: bool,
    /// Recent samples per agent and resource, for analytics: (seconds, value).
    windows: BTreeMap<(AgentId, Resource), VecDeque<(f64, f64)>>,
    /// Samples waiting to be stored.
    pending_samples: Vec<(String, String, u64, u64)>,
    /// The latest recommendation per agent and resource (no flapping).
    recommendations: BTreeMap<(AgentId, Resource), allot_core::analytics::Recommendation>,
    next_analytics: Time,
    control: Option<mpsc::UnboundedReceiver<control::Control>>,
    socket: Option<PathBuf>,
    leave_running: bool,
    last_tick_secs: f64,
    total_tick_secs: f64,
}

impl<B: Backend> std::fmt::Debug for Governor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor").field("mode", &self.backend.mode()).field("agents", &self.agents.len()).finish()
    }
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

impl<B: Backend> Governor<B> {
    /// Prepare a run: open the store, stop what a previous run left behind,
    /// register the fleet.
    pub fn new(fleet: Fleet, backend: B, opts: &Options) -> Result<Self, Error> {
        let store = Store::open(&opts.state)?;
        let events_out = match &opts.events_file {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?)),
            None => None,
        };
        let state_dir = opts.state.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), PathBuf::from);
        // Absolute, so agents with another working directory find their channel.
        let channel_dir = std::path::absolute(&state_dir).unwrap_or(state_dir).join("agents");
        let (custom_tx, custom_rx) = mpsc::unbounded_channel();
        let mut g = Governor {
            backend,
            policy: Policy::new(fleet.settings.policy.clone()),
            settings: fleet.settings.clone(),
            ledger: fleet.ledger.clone(),
            alerts: AlertLimiter::default(),
            store,
            events_out,
            clock: Clock::start(),
            agents: BTreeMap::new(),
            timers: Vec::new(),
            roller: Roller::default(),
            channel_dir,
            view: opts.view,
            recent: VecDeque::new(),
            tick: 0,
            custom_tx,
            custom_rx,
            host_suspended: BTreeSet::new(),
            notify: opts.notify,
            windows: BTreeMap::new(),
            pending_samples: Vec::new(),
            recommendations: BTreeMap::new(),
            next_analytics: Time::ZERO,
            control: None,
            socket: opts.socket.clone(),
            leave_running: opts.leave_running,
            last_tick_secs: 0.0,
            total_tick_secs: 0.0,
        };
        g.next_analytics = g.clock.now().plus(g.settings.analytics_interval);
        // Raw samples are kept 24 h.
        let _ = g.store.prune_samples(g.clock.now().as_millis().saturating_sub(86_400_000));
        if opts.readopt {
            g.readopt_leftovers()?;
        }
        g.recover_leftovers()?;
        for def in fleet.agents {
            if g.agents.contains_key(&def.spec.id) {
                continue; // adopted: it runs already
            }
            let channel = Channel::create(&g.channel_dir, def.spec.id.as_str(), def.notify_signal)?;
            let id = def.spec.id.clone();
            g.agents.insert(id, Running::new(def, channel));
        }
        Ok(g)
    }

    /// Take commands (the daemon's API) from this channel while running.
    pub fn with_control(mut self, rx: mpsc::UnboundedReceiver<control::Control>) -> Self {
        self.control = Some(rx);
        self
    }

    /// The mode in force (cgroups or process trees), for the user.
    pub fn mode(&self) -> String {
        self.backend.mode()
    }

    /// Take over the agents a previous run left running: same processes,
    /// same cgroups and limits, their quota as stored. Those that cannot be
    /// taken over are left to `recover_leftovers`, which stops them.
    fn readopt_leftovers(&mut self) -> Result<(), Error> {
        use allot_core::limits::LimitOverride;
        let now = self.clock.now();
        for a in self.store.agents()? {
            if a.state == "exited" {
                continue;
            }
            let Some(pid) = a.pid else { continue };
            let dirs: Vec<PathBuf> =
                a.cgroup.as_array().map(|v| v.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect()).unwrap_or_default();
            let Ok(quota) = serde_json::from_value::<allot_core::Quota>(a.spec["quota"].clone()) else { continue };
            let Ok(id) = AgentId::new(a.id.clone()) else { continue };
            let mut spec = allot_core::AgentSpec::new(id.clone(), a.group.clone());
            spec.priority = quota.priority;
            spec.custom_handler = quota.custom_handler.clone();
            spec.overrides = quota
                .limits
                .iter()
                .map(|(r, l)| {
                    let o = LimitOverride {
                        soft: Some(l.soft),
                        hard: Some(l.hard),
                        burst: Some(l.burst),
                        burst_window: Some(l.burst_window),
                        action: Some(l.action),
                        window: l.window,
                    };
                    (r.clone(), o)
                })
                .collect();
            // The stored quota wins over the fleet file's: it may have been changed at run time.
            let registered = if self.ledger.quota(&id).is_some() {
                self.ledger.update_agent(spec.clone()).is_ok()
            } else {
                self.ledger.register(spec.clone()).is_ok()
            };
            if !registered {
                eprintln!(
                    "allot: cannot take over {id}: its stored quota no longer resolves (group {:?}); stopping what is left of it",
                    a.group
                );
                continue;
            }
            let started = match self.backend.adopt(&dirs, pid) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.ledger.unregister(&id);
                    eprintln!("allot: cannot take over {id} (pid {pid}): {e}; stopping what is left of it");
                    continue;
                }
            };
            let command: Vec<String> =
                a.spec["command"].as_array().map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default();
            let def =
                AgentDef { spec, command, env: BTreeMap::new(), workdir: None, restart: Restart::Never, notify_signal: None, user: None };
            let channel = Channel::reopen(&self.channel_dir, id.as_str(), None)?;
            self.agents.insert(
                id.clone(),
                Running {
                    started: Some(started),
                    state: AgentState::Running,
                    last_action: "re-adopted".into(),
                    ..Running::new(def, channel)
                },
            );
            self.emit(now, "resource_management.agent.readopted", Some(id.as_str()), json!({"pid": pid, "cgroup": dirs}));
            self.cancel_orphaned_pending(&id, now);
        }
        Ok(())
    }

    /// Escalations the previous governor had scheduled and never carried out
    /// or cancelled die with its timers: record them as cancelled, so the
    /// history is complete. The policy re-decides from fresh samples.
    fn cancel_orphaned_pending(&mut self, id: &AgentId, now: Time) {
        let Ok(history) = self.store.history(Some(id.as_str())) else { return };
        let mut open: Vec<(String, String)> = Vec::new();
        for r in &history {
            if let Some(action) = r.action.strip_suffix(" (scheduled)") {
                open.push((r.resource.clone(), action.to_owned()));
            } else {
                open.retain(|(res, a)| !(res == &r.resource && a == &r.action));
            }
        }
        for (resource, action) in open {
            let detail = "the governor restarted before the escalation delay ended; the policy re-decides from fresh samples".to_owned();
            let data = json!({"resource": resource, "action": action, "outcome": "cancelled", "detail": detail, "restart": true});
            let seq = self.emit(now, &events::enforcement_topic("cancelled"), Some(id.as_str()), data.clone());
            let _ = self.store.record_enforcement(seq, now.as_millis(), id.as_str(), &resource, &action, "cancelled", &detail, &data);
        }
    }

    /// Stop agents that a previous run (killed before it could stop them)
    /// left running, so that none keeps running unnoticed.
    fn recover_leftovers(&mut self) -> Result<(), Error> {
        let now = self.clock.now();
        for a in self.store.agents()? {
            if a.state == "exited" || self.agents.keys().any(|id| id.as_str() == a.id) {
                continue;
            }
            let dirs: Vec<PathBuf> =
                a.cgroup.as_array().map(|v| v.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect()).unwrap_or_default();
            let mut killed = Vec::new();
            for _ in 0..200 {
                let mut pids: Vec<u32> = dirs.iter().filter_map(|d| allot_sys::cgroup::fs::procs(d).ok()).flatten().collect();
                pids.sort_unstable();
                pids.dedup();
                if pids.is_empty() {
                    break;
                }
                let _ = allot_sys::signal::signal_all(&pids, rustix::process::Signal::KILL);
                killed.extend(pids);
                std::thread::sleep(Duration::from_millis(5));
            }
            for d in &dirs {
                let _ = std::fs::remove_dir(d);
            }
            killed.sort_unstable();
            killed.dedup();
            let reason = format!("left by a previous allot run that did not stop cleanly; {} process(es) stopped", killed.len());
            self.store.set_agent_state(&a.id, "exited", Some(&reason), now.as_millis())?;
            self.emit(now, events::AGENT_EXITED, Some(&a.id), json!({"reason": reason, "pids": killed, "recovered": true}));
        }
        Ok(())
    }

    fn emit(&mut self, at: Time, topic: &str, agent: Option<&str>, data: Value) -> Option<u64> {
        let seq = match self.store.append_event(at.as_millis(), topic, agent, &data) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("allot: error: {e}");
                None
            }
        };
        if let Some(out) = &mut self.events_out {
            let line = json!({"seq": seq, "at": clock::rfc3339(at), "topic": topic, "agent": agent, "data": data});
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        let short = topic.strip_prefix("resource_management.").unwrap_or(topic);
        let text = format!("{} {:<22} {}", &clock::rfc3339(at)[11..19], short, agent.unwrap_or("-"));
        if self.view == ViewMode::Plain {
            println!("{text} {}", view::brief(&data));
        }
        self.recent.push_back(format!("{text} {}", view::brief(&data)));
        while self.recent.len() > 8 {
            self.recent.pop_front();
        }
        seq
    }

    fn start_agent(&mut self, id: &AgentId) -> Result<(), String> {
        let now = self.clock.now();
        let Some(r) = self.agents.get_mut(id) else { return Ok(()) };
        let quota = self.ledger.quota(id).cloned();
        let mut env =
            vec![("ALLOT_AGENT_ID".to_owned(), id.to_string()), ("ALLOT_EVENTS_FILE".to_owned(), r.channel.path().display().to_string())];
        if let Some(sock) = &self.socket {
            env.push(("ALLOT_SOCKET".to_owned(), sock.display().to_string()));
        }
        let started = self.backend.start(&r.def, &env)?;
        let pid = started.leader.pid();
        let cg_dirs: Vec<String> =
            started.cgroup.as_ref().map(|c| c.dirs.all().iter().map(|d| d.display().to_string()).collect()).unwrap_or_default();
        r.started = Some(started);
        r.state = AgentState::Running;
        r.cpu = Rate::default();
        r.io = Rate::default();
        r.net = Rate::default();
        r.terminating = None;
        let quota_json = quota.as_ref().map_or(Value::Null, |q| serde_json::to_value(q).unwrap_or(Value::Null));
        let _ = r.channel.send("quota", json!({"quota": quota_json}), now.as_millis(), None);
        let spec = json!({"command": r.def.command, "priority": r.def.spec.priority.get(), "quota": quota_json});
        let stored = allot_store::StoredAgent {
            id: id.to_string(),
            group: r.def.spec.group.clone(),
            state: "running".into(),
            pid: Some(pid),
            cgroup: json!(cg_dirs),
            spec,
            exit: None,
            updated_ms: now.as_millis(),
        };
        if let Err(e) = self.store.put_agent(&stored) {
            eprintln!("allot: error: {e}");
        }
        self.apply_backstops(id);
        self.emit(now, events::AGENT_STARTED, Some(id.as_str()), json!({"pid": pid, "cgroup": cg_dirs, "mode": self.backend.mode()}));
        Ok(())
    }

    /// Take over a running process as agent `id` (already registered).
    fn adopt_agent(&mut self, id: &AgentId, pid: u32, move_it: bool) -> Result<(), String> {
        let now = self.clock.now();
        let Some(r) = self.agents.get_mut(id) else { return Ok(()) };
        let started = self.backend.adopt_pid(&r.def, pid, move_it)?;
        let cg_dirs: Vec<String> =
            started.cgroup.as_ref().map(|c| c.dirs.all().iter().map(|d| d.display().to_string()).collect()).unwrap_or_default();
        r.started = Some(started);
        r.state = AgentState::Running;
        let quota_json = self.ledger.quota(id).map_or(Value::Null, |q| serde_json::to_value(q).unwrap_or(Value::Null));
        let stored = allot_store::StoredAgent {
            id: id.to_string(),
            group: r.def.spec.group.clone(),
            state: "running".into(),
            pid: Some(pid),
            cgroup: json!(cg_dirs),
            spec: json!({"command": [], "priority": r.def.spec.priority.get(), "quota": quota_json, "adopted": true}),
            exit: None,
            updated_ms: now.as_millis(),
        };
        if let Err(e) = self.store.put_agent(&stored) {
            eprintln!("allot: error: {e}");
        }
        self.apply_backstops(id);
        self.emit(now, "resource_management.agent.adopted", Some(id.as_str()), json!({"pid": pid, "moved": move_it, "cgroup": cg_dirs}));
        Ok(())
    }

    /// Kernel backstops (SPEC section 4): memory ceiling and pids.max at burst
    /// when a burst is set, memory.high at hard when memory's action is
    /// throttle, cpu weight from priority; group totals on the group cgroup.
    pub(super) fn apply_backstops(&mut self, id: &AgentId) {
        let Some(q) = self.ledger.quota(id).cloned() else { return };
        let now = self.clock.now();
        let mut notes = Vec::new();
        if let Some(act) = self.agents.get_mut(id).and_then(|r| r.started.as_mut()).map(|s| &mut s.actuator) {
            let mut try_set = |what: &str, r: Result<allot_sys::actuate::Outcome, allot_sys::SysError>| {
                match r {
                Ok(o) => notes.push(json!({"what": what, "outcome": "success", "writes": o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect::<Vec<_>>()})),
                Err(e) => notes.push(json!({"what": what, "outcome": "failure", "error": e.to_string()})),
            }
            };
            try_set("cpu weight", act.set_cpu_weight(q.priority.cpu_weight()));
            if let Some(l) = q.limits.get(&Resource::Memory) {
                if l.burst > l.hard {
                    try_set("memory ceiling at burst", act.set_memory_max(Some(l.burst)));
                }
                if l.action == allot_core::Action::Throttle {
                    try_set("memory.high at hard", act.set_memory_high(Some(l.hard)));
                }
            }
            if let Some(l) = q.limits.get(&Resource::Processes) {
                if l.burst > l.hard {
                    try_set("pids.max at burst", act.set_pids_max(Some(l.burst)));
                }
            }
        }
        if let Some(g) = self.ledger.group(&q.group).cloned() {
            if let Some(mut ga) = self.backend.group_actuator(&g.name) {
                let totals = g.effective_totals(self.ledger.members(&g.name).count());
                let mut gnotes = Vec::new();
                for (r, v) in totals {
                    let res = match r {
                        Resource::Memory => Some(ga.set_memory_max(Some(v))),
                        Resource::Processes => Some(ga.set_pids_max(Some(v))),
                        Resource::Cpu => Some(ga.set_cpu_limit(Some(v))),
                        _ => None,
                    };
                    if let Some(res) = res {
                        gnotes.push(
                            json!({"resource": r.name(), "total": v, "outcome": res.map_or_else(|e| e.to_string(), |_| "success".into())}),
                        );
                    }
                }
                notes.push(json!({"group_totals": g.name, "results": gnotes}));
            }
        }
        self.emit(now, "resource_management.backstops", Some(id.as_str()), json!({"backstops": notes}));
    }

    /// Run until every agent has exited, the time is up, or a signal stops us.
    pub async fn run(mut self, run_for: Option<Duration>) -> Result<Summary, Error> {
        let started = if self.notify {
            allot_sys::notify::Notifier::start().map_err(|e| e.to_string())
        } else {
            Err("turned off (--no-notify)".to_owned())
        };
        let (notifier, mut notices) = match started {
            Ok((n, rx)) => (Some(n), rx),
            Err(e) if !self.notify => {
                let _ = e;
                let (_tx, rx) = mpsc::unbounded_channel();
                (None, rx)
            }
            Err(e) => {
                eprintln!("allot: warning: kernel notifications unavailable ({e}); sampling only");
                let (_tx, rx) = mpsc::unbounded_channel();
                (None, rx)
            }
        };
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in &ids {
            if self.agents.get(id).is_some_and(|r| r.started.is_some()) {
                if let Some(n) = &notifier {
                    self.watch(n, id);
                }
                continue;
            }
            if let Err(e) = self.start_agent(id) {
                let now = self.clock.now();
                self.mark_exited(id, &format!("could not start: {e}"), now);
            } else if let Some(n) = &notifier {
                self.watch(n, id);
            }
        }
        let deadline = run_for.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(self.settings.sample_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut render = tokio::time::interval(Duration::from_secs(1));
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut control = self.control.take();
        let stop_reason;
        loop {
            let next_timer = self.next_timer().map_or(far, |t| self.clock.instant(t));
            tokio::select! {
                _ = tick.tick() => {
                    self.tick += 1;
                    let slow = self.tick % u64::from(self.settings.slow_every) == 1 || self.settings.slow_every == 1;
                    let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
                    let started = std::time::Instant::now();
                    for id in ids {
                        self.sample(&id, slow);
                    }
                    self.flush_samples();
                    self.last_tick_secs = started.elapsed().as_secs_f64();
                    self.total_tick_secs += self.last_tick_secs;
                    self.reap(notifier.as_ref());
                    if slow {
                        self.host_pressure();
                        self.group_totals();
                    }
                    if control.is_none() && self.agents.values().all(|r| matches!(r.state, AgentState::Exited(_))) {
                        stop_reason = "every agent has exited";
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next_timer) => {
                    self.fire_timers(notifier.as_ref());
                }
                Some((agent, notice)) = notices.recv() => {
                    if let Ok(id) = AgentId::new(agent) {
                        if self.agents.contains_key(&id) {
                            self.sample(&id, false);
                            if matches!(notice, allot_sys::notify::Notice::MemoryThreshold { .. } | allot_sys::notify::Notice::MemoryEvents(_)) {
                                let now = self.clock.now();
                                for ms in [5, 20, 50, 100] {
                                    self.timers.push((now.plus(Duration::from_millis(ms)), Timer::Sample(id.clone())));
                                }
                            }
                            self.reap(notifier.as_ref());
                        }
                    }
                }
                Some(res) = self.custom_rx.recv() => {
                    self.record_custom(res);
                }
                Some(c) = async {
                    match control.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let (Some(id), Some(n)) = (self.handle_control(c), notifier.as_ref()) {
                        self.watch(n, &id);
                    }
                }
                _ = render.tick() => {
                    self.render();
                }
                _ = tokio::signal::ctrl_c() => { stop_reason = "interrupted (Ctrl-C)"; break; }
                _ = term.recv() => { stop_reason = "SIGTERM"; break; }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => { stop_reason = "--for elapsed"; break; }
            }
        }
        self.shutdown(stop_reason).await;
        let exits = self
            .agents
            .iter()
            .map(|(id, r)| (id.to_string(), if let AgentState::Exited(why) = &r.state { why.clone() } else { r.state.name().to_owned() }))
            .collect();
        Ok(Summary { events: self.store.last_seq().unwrap_or(0), exits })
    }

    fn watch(&self, n: &allot_sys::notify::Notifier, id: &AgentId) {
        let Some(r) = self.agents.get(id) else { return };
        let Some(st) = &r.started else { return };
        let _ = n.process_exit(
            id.as_str(),
            st.leader.pid(),
            st.cgroup.as_ref().and_then(|c| c.dirs.all().first().map(|p| p.to_path_buf())).as_deref(),
        );
        let Some(cg) = &st.cgroup else { return };
        let Some(q) = self.ledger.quota(id) else { return };
        if let Some(l) = q.limits.get(&Resource::Memory) {
            if let Some(d) = cg.v1(allot_sys::cgroup::tree::V1::Memory) {
                let _ = n.memory_threshold(id.as_str(), d, l.soft);
                let _ = n.memory_threshold(id.as_str(), d, l.hard);
            }
            if let Some(d) = cg.v2().filter(|_| cg.dirs.v2_has("memory")) {
                let _ = n.memory_events(id.as_str(), d);
            }
        }
    }

    fn next_timer(&self) -> Option<Time> {
        let own = self.timers.iter().map(|(t, _)| *t).chain(std::iter::once(self.next_analytics)).min();
        match (own, self.policy.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_timers(&mut self, notifier: Option<&allot_sys::notify::Notifier>) {
        let now = self.clock.now();
        let decisions = self.policy.advance(now);
        self.execute_all(decisions);
        if now >= self.next_analytics {
            self.next_analytics = now.plus(self.settings.analytics_interval);
            self.run_analytics(now);
        }
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers).into_iter().partition(|(t, _)| *t <= now);
        self.timers = rest;
        for (at, t) in due {
            match t {
                Timer::Kill(id) => self.grace_over(&id, at),
                Timer::Sample(id) => self.sample(&id, false),
                Timer::Restart(id) => {
                    if let Some(spec) = self.agents.get(&id).map(|r| r.def.spec.clone()) {
                        let _ = self.ledger.register(spec);
                    }
                    if let Err(e) = self.start_agent(&id) {
                        self.mark_exited(&id, &format!("could not restart: {e}"), at);
                    } else if let Some(n) = notifier {
                        self.watch(n, &id);
                    }
                }
            }
        }
        self.reap(notifier);
    }

    /// Sample one agent now; `slow` adds files, I/O and network.
    fn sample(&mut self, id: &AgentId, slow: bool) {
        let now = self.clock.now();
        let Some(r) = self.agents.get_mut(id) else { return };
        if matches!(r.state, AgentState::Exited(_) | AgentState::Restarting) {
            return;
        }
        let Some(st) = r.started.as_mut() else { return };
        let mut values: Vec<(Resource, u64)> = Vec::new();
        match st.probe.fast() {
            Ok(f) => {
                values.push((Resource::Memory, f.memory));
                values.push((Resource::Processes, f.processes));
                if let Some(m) = r.cpu.update(f.cpu_ns, now) {
                    values.push((Resource::Cpu, m / 1_000_000));
                }
            }
            Err(_) => return, // the agent is exiting; reap() will say so
        }
        if slow {
            if let Ok(s) = st.probe.slow() {
                values.push((Resource::Files, s.files));
                if let Some(rate) = r.io.update(s.io_bytes, now) {
                    values.push((Resource::DiskIo, rate));
                }
                if let allot_sys::probe::Measure::Value(n) = s.network_bytes {
                    if let Some(rate) = r.net.update(n, now) {
                        values.push((Resource::Network, rate));
                    }
                }
            }
            if let Ok(c) = st.probe.connections() {
                values.push((Resource::Connections, c));
            }
        }
        let mut decisions = Vec::new();
        let mut alerts = Vec::new();
        let window_secs = self.settings.analytics_window.as_secs_f64();
        let secs = now.as_millis() as f64 / 1000.0;
        for (res, v) in values {
            r.usage.insert(res.clone(), v);
            self.pending_samples.push((id.to_string(), res.name().to_owned(), now.as_millis(), v));
            let w = self.windows.entry((id.clone(), res.clone())).or_default();
            w.push_back((secs, v as f64));
            while w.front().is_some_and(|(t, _)| secs - t > window_secs) {
                w.pop_front();
            }
            if let Some(roll) = self.roller.add(id.as_str(), res.name(), v, now.as_millis()) {
                let _ = self.store.put_rollup(id.as_str(), res.name(), &roll);
            }
            let Ok(a) = self.ledger.record(id, res.clone(), v, now) else { continue };
            if let Some(l) = &a.limit {
                if let Some(alert) = self.alerts.check(id, &res, v, Threshold::from_limit(l), now) {
                    alerts.push(alert);
                }
            }
            decisions.extend(self.policy.observe(&a));
        }
        for alert in alerts {
            let topic = events::alert_topic(alert.level);
            let data = serde_json::to_value(&alert).unwrap_or(Value::Null);
            self.emit(now, topic, Some(id.as_str()), data);
        }
        self.execute_all(decisions);
    }

    fn flush_samples(&mut self) {
        if self.pending_samples.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending_samples);
        if let Err(e) = self.store.put_samples(&batch) {
            eprintln!("allot: error: {e}");
        }
    }

    /// Analytics over the window (SPEC section 6): pattern per agent and
    /// resource, forecasts (a predictive alert when the hard limit is
    /// forecast within the horizon) and recommendations, stored per agent.
    fn run_analytics(&mut self, now: Time) {
        use allot_core::analytics::{self, GroupFit};
        let horizon = self.settings.forecast_horizon.as_secs_f64();
        let keys: Vec<(AgentId, Resource)> = self.windows.keys().cloned().collect();
        for (id, res) in keys {
            let Some(q) = self.ledger.quota(&id).cloned() else { continue };
            let Some(limit) = q.limits.get(&res).cloned() else { continue };
            let samples: Vec<(f64, f64)> =
                self.windows.get(&(id.clone(), res.clone())).map(|w| w.iter().copied().collect()).unwrap_or_default();
            let Ok(pattern) = analytics::classify(&samples) else { continue };
            let fc = analytics::forecast(&samples, limit.hard as f64);
            let fits: Vec<GroupFit> = self
                .ledger
                .groups()
                .filter_map(|g| g.limits.get(&res).map(|l| GroupFit { group: g.name.clone(), soft: l.soft, hard: l.hard }))
                .collect();
            let mut rec = analytics::recommend(&pattern, limit.soft, limit.hard, &q.group, &fits, horizon, fc.as_ref());
            // A group change must fit every resource the agent uses, not just this one.
            if let Some(g) = rec.as_ref().filter(|r| r.kind == analytics::RecommendationKind::ChangeGroup).and_then(|r| r.group.clone()) {
                if !self.group_fits_all(&id, &g) {
                    rec = None;
                }
            }
            let pattern_json = json!({"pattern": pattern.kind.name(), "confidence": pattern.confidence, "characteristics": pattern.characteristics, "forecast_hard": fc});
            let key = (id.clone(), res.clone());
            let new_rec = rec.filter(|r| analytics::replaces(self.recommendations.get(&key), r));
            let rec_json = new_rec.as_ref().map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
            if let Err(e) = self.store.put_analysis(id.as_str(), res.name(), now.as_millis(), &pattern_json, rec_json.as_ref()) {
                eprintln!("allot: error: {e}");
            }
            if let Some(f) = fc.as_ref().filter(|f| f.eta_secs <= horizon && f.eta_secs > 0.0) {
                let th = Threshold { warning_level: 0, critical_level: u64::MAX };
                let Ok(fkey) = AgentId::new(format!("forecast:{id}")) else { continue };
                if self.alerts.check(&fkey, &res, 1, th, now).is_some() {
                    self.emit(now, events::ALERT_FORECAST, Some(id.as_str()), json!({"resource": res.name(), "limit": limit.hard, "eta_secs": f.eta_secs, "eta_low_secs": f.eta_low_secs, "eta_high_secs": f.eta_high_secs.min(1e12), "pattern": pattern.kind.name()}));
                }
            }
            if let (Some(r), Some(rj)) = (new_rec, rec_json) {
                self.recommendations.insert(key, r);
                self.emit(
                    now,
                    events::RECOMMENDATION,
                    Some(id.as_str()),
                    json!({"resource": res.name(), "recommendation": rj, "pattern": pattern.kind.name()}),
                );
            }
        }
    }

    /// Whether group `g`'s hard limits cover the 95th percentile plus the
    /// margin of every resource of `id` measured in the window.
    fn group_fits_all(&self, id: &AgentId, g: &str) -> bool {
        let Some(group) = self.ledger.group(g) else { return false };
        self.windows.iter().filter(|((a, _), _)| a == id).all(|((_, res), w)| {
            let Some(l) = group.limits.get(res) else { return true };
            let mut v: Vec<f64> = w.iter().map(|(_, x)| *x).collect();
            v.sort_by(f64::total_cmp);
            let p95 = v.get(((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
            p95 * allot_core::analytics::MARGIN <= l.hard as f64
        })
    }

    fn execute_all(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            self.execute(d);
        }
    }

    /// Leaders that exited: record why, clean up, restart if the policy says so.
    fn reap(&mut self, _notifier: Option<&allot_sys::notify::Notifier>) {
        let now = self.clock.now();
        let mut exited = Vec::new();
        for (id, r) in &mut self.agents {
            if let Some(st) = r.started.as_mut() {
                if let Some(exit) = st.leader.try_wait() {
                    exited.push((id.clone(), exit));
                }
            }
        }
        for (id, exit) in exited {
            let Some(r) = self.agents.get_mut(&id) else { continue };
            let by_allot = r.terminating.clone();
            let started = r.started.take();
            let reason = match &by_allot {
                Some(why) => format!("{exit}: {why}"),
                None => format!("{exit} (its own exit)"),
            };
            let restart = match r.def.restart {
                Restart::OnFailure { max } if by_allot.is_none() && exit.failed() && r.restarts < max => {
                    r.restarts += 1;
                    Some(Duration::from_secs((1u64 << (r.restarts - 1).min(5)).min(30)))
                }
                _ => None,
            };
            self.backend.cleanup(started.as_ref().and_then(|s| s.cgroup.as_ref()));
            self.policy.remove(&id);
            self.alerts.forget(&id);
            let spec = self.ledger.unregister(&id).ok();
            let _ = spec;
            match restart {
                Some(backoff) => {
                    let due = now.plus(backoff);
                    if let Some(r) = self.agents.get_mut(&id) {
                        r.state = AgentState::Restarting;
                        let restarts = r.restarts;
                        let _ = self.store.set_agent_state(id.as_str(), "restarting", Some(&reason), now.as_millis());
                        self.emit(
                            now,
                            events::AGENT_EXITED,
                            Some(id.as_str()),
                            json!({"reason": reason, "restart_in_ms": allot_core::time::duration_millis(backoff), "restart": restarts}),
                        );
                    }
                    self.timers.push((due, Timer::Restart(id)));
                }
                None => self.mark_exited(&id, &reason, now),
            }
        }
    }

    fn mark_exited(&mut self, id: &AgentId, reason: &str, now: Time) {
        if let Some(r) = self.agents.get_mut(id) {
            r.state = AgentState::Exited(reason.to_owned());
            r.started = None;
        }
        let _ = self.ledger.unregister(id);
        self.policy.remove(id);
        let _ = self.store.set_agent_state(id.as_str(), "exited", Some(reason), now.as_millis());
        self.emit(now, events::AGENT_EXITED, Some(id.as_str()), json!({"reason": reason}));
    }

    fn grace_over(&mut self, id: &AgentId, at: Time) {
        let Some(r) = self.agents.get_mut(id) else { return };
        let Some(st) = r.started.as_mut() else { return };
        let (outcome, detail) = match st.actuator.kill() {
            Ok(o) => (
                "success",
                format!("grace over: {} {}", o.detail, o.writes.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>().join(" ")),
            ),
            Err(e) => ("failure", format!("grace over; kill failed: {e}")),
        };
        let data = json!({"stage": "kill", "outcome": outcome, "detail": detail});
        let seq = self.emit(at, &events::enforcement_topic("terminate"), Some(id.as_str()), data.clone());
        let _ = self.store.record_enforcement(seq, at.as_millis(), id.as_str(), "-", "terminate", outcome, &detail, &data);
    }

    /// Group totals (SPEC section 5) on the policy side: a warning event and
    /// record when the members' summed usage exceeds a total (at most once a
    /// minute per group and resource); the kernel holds the totals on the
    /// group cgroup (see `apply_backstops`).
    fn group_totals(&mut self) {
        let now = self.clock.now();
        let groups: BTreeSet<String> = self.agents.values().filter(|r| r.started.is_some()).map(|r| r.def.spec.group.clone()).collect();
        for g in groups {
            let Ok(violations) = self.ledger.group_violations(&g) else { continue };
            for v in violations {
                let Ok(key) = AgentId::new(format!("group:{g}")) else { continue };
                let th = Threshold { warning_level: v.total, critical_level: u64::MAX };
                if self.alerts.check(&key, &v.resource, v.usage, th, now).is_none() {
                    continue;
                }
                let detail =
                    format!("members of group {g} use {} {} against a group total of {}", v.usage, v.resource.unit().name(), v.total);
                let data = json!({"group": g, "resource": v.resource.name(), "usage": v.usage, "total": v.total, "outcome": "success", "detail": detail});
                let seq = self.emit(now, events::QUOTA_WARNING, None, data.clone());
                let _ =
                    self.store.record_enforcement(seq, now.as_millis(), key.as_str(), v.resource.name(), "warn", "success", &detail, &data);
            }
        }
    }

    /// When the host itself runs short of memory (MemAvailable under the
    /// reservation), suspend agents lowest priority first, then largest
    /// excess over quota; resume them when memory is back.
    fn host_pressure(&mut self) {
        let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return };
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        let (Some(total), Some(avail)) = (get("MemTotal:"), get("MemAvailable:")) else { return };
        let reserve = total / 4;
        let now = self.clock.now();
        if avail < reserve {
            let candidates: Vec<(AgentId, u8, u64)> = self
                .agents
                .iter()
                .filter(|(id, r)| matches!(r.state, AgentState::Running | AgentState::Throttled) && !self.host_suspended.contains(*id))
                .map(|(id, r)| {
                    let used = r.usage.get(&Resource::Memory).copied().unwrap_or(0);
                    let soft = self.ledger.quota(id).and_then(|q| q.limits.get(&Resource::Memory)).map_or(0, |l| l.soft);
                    (id.clone(), r.def.spec.priority.get(), used.saturating_sub(soft))
                })
                .collect();
            if let Some(victim) = allot_core::ledger::eviction_order(&candidates).into_iter().next() {
                let Some(r) = self.agents.get_mut(&victim) else { return };
                let Some(st) = r.started.as_mut() else { return };
                let (outcome, detail) = match st.actuator.freeze() {
                    Ok(o) => ("success", format!("host memory available {avail} under reserve {reserve}: frozen {}", o.detail)),
                    Err(e) => ("failure", format!("host memory short; freeze failed: {e}")),
                };
                r.state = AgentState::Suspended;
                r.last_action = "suspend (host memory)".into();
                self.host_suspended.insert(victim.clone());
                let data =
                    json!({"reason": "host_memory_pressure", "available": avail, "reserve": reserve, "outcome": outcome, "detail": detail});
                let seq = self.emit(now, &events::enforcement_topic("suspend"), Some(victim.as_str()), data.clone());
                let _ = self.store.record_enforcement(seq, now.as_millis(), victim.as_str(), "memory", "suspend", outcome, &detail, &data);
            }
        } else if avail > reserve + reserve / 5 {
            if let Some(id) = self.host_suspended.iter().next_back().cloned() {
                self.host_suspended.remove(&id);
                if let Some(st) = self.agents.get_mut(&id).and_then(|r| r.started.as_mut()) {
                    let (outcome, detail) = match st.actuator.thaw() {
                        Ok(_) => ("success", format!("host memory back ({avail} available): thawed")),
                        Err(e) => ("failure", format!("thaw failed: {e}")),
                    };
                    if let Some(r) = self.agents.get_mut(&id) {
                        r.state = AgentState::Running;
                    }
                    let data = json!({"reason": "host_memory_recovered", "outcome": outcome, "detail": detail});
                    let seq = self.emit(now, &events::enforcement_topic("restore"), Some(id.as_str()), data.clone());
                    let _ = self.store.record_enforcement(seq, now.as_millis(), id.as_str(), "memory", "restore", outcome, &detail, &data);
                }
            }
        }
    }

    fn render(&mut self) {
        if self.view == ViewMode::Quiet {
            return;
        }
        let rows: Vec<view::Row> = self
            .agents
            .iter()
            .map(|(id, r)| view::Row {
                agent: id.to_string(),
                group: r.def.spec.group.clone(),
                state: match &r.state {
                    AgentState::Exited(why) => format!("exited: {why}"),
                    s => s.name().to_owned(),
                },
                usage: r.usage.clone(),
                last_action: r.last_action.clone(),
            })
            .collect();
        match self.view {
            ViewMode::Live => view::live(&self.backend.mode(), &rows, &self.recent),
            ViewMode::Plain if self.tick % 10 == 0 => view::plain(&rows),
            _ => {}
        }
    }

    async fn shutdown(&mut self, why: &str) {
        let now = self.clock.now();
        if self.leave_running {
            // The daemon stops alone: its agents keep running under their kernel
            // limits, and the next daemon on this state takes them over.
            self.run_analytics(now);
            self.flush_samples();
            for (a, r, roll) in self.roller.flush() {
                let _ = self.store.put_rollup(&a, &r, &roll);
            }
            let live = self.agents.values().filter(|r| r.started.is_some()).count();
            self.emit(now, "resource_management.governor.stopped", None, json!({"reason": why, "agents_left_running": live}));
            // Removes only the group and root cgroups that no agent uses any more.
            self.backend.shutdown();
            return;
        }
        let grace = self.settings.policy.terminate_grace;
        let live: Vec<AgentId> = self.agents.iter().filter(|(_, r)| r.started.is_some()).map(|(id, _)| id.clone()).collect();
        for id in &live {
            let Some(r) = self.agents.get_mut(id) else { continue };
            let pid = r.started.as_ref().map(|s| s.leader.pid());
            let _ = r.channel.send(
                "termination",
                json!({"reason": format!("allot is stopping: {why}"), "grace_ms": allot_core::time::duration_millis(grace)}),
                now.as_millis(),
                pid,
            );
            r.terminating = Some(format!("stopped by allot ({why})"));
            if let Some(st) = r.started.as_mut() {
                let _ = st.actuator.thaw();
                let _ = st.actuator.signal(rustix::process::Signal::TERM);
            }
        }
        let until = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < until && self.agents.values().any(|r| r.started.is_some()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.reap(None);
        }
        for id in &live {
            if let Some(st) = self.agents.get_mut(id).and_then(|r| r.started.as_mut()) {
                let _ = st.actuator.kill();
            }
        }
        for _ in 0..50 {
            self.reap(None);
            if self.agents.values().all(|r| r.started.is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.run_analytics(self.clock.now());
        self.flush_samples();
        for (a, r, roll) in self.roller.flush() {
            let _ = self.store.put_rollup(&a, &r, &roll);
        }
        self.backend.shutdown();
        self.render();
    }
}
