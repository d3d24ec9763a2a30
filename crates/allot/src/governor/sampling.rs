//! Sampling: each tick reads every agent's probe (memory, cpu time,
//! processes and threads every time; files, I/O, network and connections at the slow
//! cadence) and feeds the values, with usage an agent reports itself,
//! through one path: ledger, alerts, policy, analytics window, store.
//!
//! disk is the agent's workspace (its `workdir`; an agent without one has
//! no disk reading: it shares allot's working directory), measured at the
//! slow cadence by an `allot_sys::probe::DiskWalk` that looks at most
//! [`DISK_ENTRIES_PER_SAMPLE`] entries per sample: a larger tree is walked
//! over several slow samples, and each completed pass is one reading.
//!
//! Rates (cpu, disk I/O, network) come from ticks only: a follow-up sample
//! after a kernel notice (a few milliseconds after the last reading) updates
//! memory, processes and what the notice is about, never a rate, and
//! `allot_core::rate` refuses any interval under
//! [`allot_core::rate::MIN_RATE_INTERVAL_MS`] in any case.

use super::control::ControlError;
use super::{Backend, Governor};
use allot_core::alerts::Threshold;
use allot_core::rate::cpu_millicores;
use allot_core::{AgentId, Resource, Time, events};
use allot_store::rollup::Roller;
use serde_json::{Value, json};
/// The most directory entries one slow sample looks at in an agent's
/// workspace (about 2 us each here: at most about 20 ms per agent and sample).
pub(super) const DISK_ENTRIES_PER_SAMPLE: usize = 10_000;

/// How old an agent's inactive-file-cache figure may grow while its memory
/// is far from its limits (`allot_core::working_set`): `memory.stat` is read
/// then, every sample near a limit, and after every kernel notice.
pub(super) const WORKING_SET_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How many agents a tick samples between two looks at the kernel's
/// notices (a sample takes about 10 to 60 us; a look, tens of nanoseconds).
const NOTICE_CHECK_EVERY: usize = 4;

/// How many samples one store transaction holds (about 6 us each here):
/// a tick's samples are stored in transactions of this size, with a look
/// at the kernel's notices between them.
const SAMPLES_PER_TRANSACTION: usize = 128;

/// How many custom resources without a limit in its quota one agent may report.
pub(super) const MAX_UNDECLARED_CUSTOM: usize = 32;

/// What one sample of an agent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// A tick: the fast counters and the cpu rate; `slow` adds files, I/O, network and connections.
    Tick {
        /// The slow cadence is due.
        slow: bool,
    },
    /// After a kernel notice: memory, processes and threads only, no rate.
    FollowUp,
}

/// The sampling part: tick count, samples waiting to be stored, per-minute
/// rollups, and the latest reported value per agent and resource since the
/// last tick: an agent's reports each go to the ledger, alerts and policy,
/// but at most one per tick is kept as a sample (stored, analytics, rollups),
/// so reporting as fast as it can costs the store and memory no more than
/// being sampled.
#[derive(Debug, Default)]
pub(super) struct Sampler {
    pub(super) tick: u64,
    pending: Vec<(String, String, u64, u64)>,
    /// Rollups of minutes that ended, waiting to be stored with the samples.
    pending_rollups: Vec<(String, String, allot_store::rollup::Rollup)>,
    roller: Roller,
    pub(super) reported: std::collections::BTreeMap<(AgentId, Resource), (Time, u64)>,
}

impl<B: Backend> Governor<B> {
    /// One sampling tick over every agent.
    /// Kernel notices that come meanwhile are handled between its parts
    /// ([`Governor::urgent`]).
    pub(super) fn tick(&mut self, inbox: &mut super::event::Inbox) {
        self.sampler.tick += 1;
        let every = u64::from(self.settings.slow_every);
        let slow = every <= 1 || self.sampler.tick % every == 1;
        let started = std::time::Instant::now();
        for (i, id) in self.agents.ids().iter().enumerate() {
            if i % NOTICE_CHECK_EVERY == 0 {
                self.urgent(inbox);
            }
            self.sample(id, Reading::Tick { slow });
        }
        self.urgent(inbox);
        self.flush_samples_between(&mut |g: &mut Self| g.urgent(inbox));
        let now = self.clock.now();
        self.recorder.retry(now);
        self.recorder.metrics.tick(started.elapsed().as_secs_f64());
        self.reap();
        self.urgent(inbox);
        if slow {
            self.host_pressure();
            self.refresh_groups_near_their_totals();
            self.group_totals();
            self.urgent(inbox);
        }
        self.refresh_metrics();
    }

    /// Sample one agent now (see [`Reading`]).
    pub(super) fn sample(&mut self, id: &AgentId, reading: Reading) {
        let now = self.clock.now();
        let watermark = allot_core::working_set::watermark(self.domain.ledger.quota(id).and_then(|q| q.limits.get(&Resource::Memory)));
        let Some(a) = self.agents.get_mut(id) else { return };
        if !a.is_active() {
            return;
        }
        let Some(p) = a.proc.as_mut() else { return };
        let mut values: Vec<(Resource, u64)> = Vec::new();
        match p.probe.fast() {
            Ok(mut f) => {
                // The inactive cache is read afresh near a limit, after a kernel notice, and when old.
                let fresh = reading == Reading::FollowUp
                    || allot_core::working_set::refresh_due(f.memory_raw, watermark, a.working_set_at, now, WORKING_SET_MAX_AGE);
                if fresh {
                    if let Ok(Some(inactive)) = p.probe.refresh_working_set() {
                        f.memory = f.memory_raw.saturating_sub(inactive);
                    }
                    a.working_set_at = Some(now);
                }
                a.memory_raw = f.memory_raw;
                values.push((Resource::Memory, f.memory));
                values.push((Resource::Processes, f.processes));
                values.push((Resource::Threads, f.threads));
                if reading != Reading::FollowUp {
                    if let Some(m) = cpu_millicores(&mut a.rates.cpu, f.cpu_ns, now) {
                        values.push((Resource::Cpu, m));
                    }
                }
            }
            Err(_) => return, // the agent is exiting; reap() will say so
        }
        if reading == (Reading::Tick { slow: true }) {
            if let Ok(s) = p.probe.slow() {
                if a.io_from != Some(s.io_from) {
                    // Another counter: the rate starts again from it.
                    tracing::debug!(agent = %id, source = s.io_from.name(), "disk_io measured from");
                    a.rates.io.reset();
                    a.io_from = Some(s.io_from);
                }
                values.push((Resource::Files, s.files));
                if let Some(rate) = a.rates.io.per_second(s.io_bytes, now) {
                    values.push((Resource::DiskIo, rate));
                }
                if let allot_sys::probe::Measure::Value(n) = s.network_bytes {
                    if let Some(rate) = a.rates.net.per_second(n, now) {
                        values.push((Resource::Network, rate));
                    }
                }
            }
            if let Ok(c) = p.probe.connections() {
                values.push((Resource::Connections, c));
            }
            if a.disk.is_none() {
                a.disk =
                    a.def.workdir.as_ref().map(|w| allot_sys::probe::DiskWalk::new(std::path::absolute(w).unwrap_or_else(|_| w.clone())));
            }
            if let Some(walk) = a.disk.as_mut() {
                match walk.step(DISK_ENTRIES_PER_SAMPLE) {
                    Ok(Some(bytes)) => values.push((Resource::Disk, bytes)),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(agent = %id, error = %e, "workspace not measured"),
                }
            }
        }
        for (res, v) in values {
            self.observe(id, res, v, now);
        }
    }

    /// One value of one resource: the single path from a reading to the ledger, alerts, policy and analytics.
    /// Returns the assessment (when the ledger knows the agent) and how many decisions it caused.
    fn observe(&mut self, id: &AgentId, res: Resource, v: u64, now: Time) -> (Option<allot_core::Assessment>, usize) {
        self.keep(id, &res, v, now);
        self.judge(id, res, v, now)
    }

    /// Keep one value as a sample: stored, in the analytics window, in the rollups.
    fn keep(&mut self, id: &AgentId, res: &Resource, v: u64, now: Time) {
        self.sampler.pending.push((id.to_string(), res.name().to_owned(), now.as_millis(), v));
        self.analysis.push(id, res, now, v, self.settings.analytics_window);
        if let Some(roll) = self.sampler.roller.add(id.as_str(), res.name(), v, now.as_millis()) {
            self.sampler.pending_rollups.push((id.to_string(), res.name().to_owned(), roll));
        }
    }

    /// Keep the latest report of each agent and resource since the last tick as its sample.
    fn keep_reports(&mut self) {
        for ((id, res), (at, v)) in std::mem::take(&mut self.sampler.reported) {
            self.keep(&id, &res, v, at);
        }
    }

    /// One value into the live usage, the ledger, alerts and the policy.
    pub(super) fn judge(&mut self, id: &AgentId, res: Resource, v: u64, now: Time) -> (Option<allot_core::Assessment>, usize) {
        if let Some(a) = self.agents.get_mut(id) {
            a.usage.insert(res.clone(), v);
        }
        let Ok(assessment) = self.domain.ledger.record(id, res.clone(), v, now) else { return (None, 0) };
        if let Some(l) = &assessment.limit {
            if let Some(alert) = self.domain.alerts.check(id, &res, v, Threshold::from_limit(l), now) {
                let data = serde_json::to_value(&alert).unwrap_or(Value::Null);
                self.recorder.emit(now, events::alert_topic(alert.level), Some(id.as_str()), data);
            }
        }
        let mut decisions = Vec::new();
        if let Some((action, due)) = self.domain.restored.remove(&(id.clone(), res.clone())) {
            decisions.extend(self.domain.policy.restore_pending(&assessment, action, due));
        }
        decisions.extend(self.domain.policy.observe(&assessment));
        let n = decisions.len();
        self.execute_all(decisions);
        (Some(assessment), n)
    }

    /// Usage an agent reports itself, through the same path as a sample: an
    /// increment of its spend within the window (`budgets::report_spend`).
    /// An agent may report at most [`MAX_UNDECLARED_CUSTOM`] custom
    /// resources that its quota gives no limit (each is kept in the ledger,
    /// the analytics windows and the metrics for as long as the agent lives).
    ///
    /// A count written with a window (`400/h`) is converted to the window of
    /// the agent's limit on it (per minute when it has none), rounded up to a
    /// whole count; the answer says the value and window it was counted as.
    pub(super) fn report_usage(
        &mut self,
        agent: &str,
        resource: Resource,
        value: u64,
        window: Option<allot_core::quantity::Window>,
        reply: super::control::Reply<Value>,
    ) {
        match self.check_report(agent, &resource, value, window) {
            Ok((id, value, per)) => self.report_spend(&id, &resource, value, per, reply),
            Err(e) => drop(reply.send(Err(e))),
        }
    }

    /// A report's agent, its value in the window of the agent's limit, and that window.
    fn check_report(
        &self,
        agent: &str,
        resource: &Resource,
        value: u64,
        window: Option<allot_core::quantity::Window>,
    ) -> Result<(AgentId, u64, allot_core::quantity::Window), ControlError> {
        if !resource.is_custom() {
            let message = format!("{resource} is measured by allot; only custom resources (tokens, usd_micros, ...) can be reported");
            return Err(ControlError::Invalid { field: "resource", message });
        }
        let id = self.known(agent)?;
        if self.domain.ledger.quota(&id).is_none() {
            let state = self.agents.get(&id).map_or("unknown", |a| a.state_name()).to_owned();
            return Err(ControlError::NotRunning { agent: agent.to_owned(), state });
        }
        let undeclared = |r: &Resource| r.is_custom() && self.domain.ledger.quota(&id).is_none_or(|q| !q.limits.contains_key(r));
        if undeclared(resource) {
            let reported = self.agents.get(&id).map(|a| &a.usage);
            if !reported.is_some_and(|u| u.contains_key(resource)) {
                let n = reported.map_or(0, |u| u.keys().filter(|r| undeclared(r)).count());
                if n >= MAX_UNDECLARED_CUSTOM {
                    let message = format!(
                        "agent {agent} already reports {n} custom resources without a limit in its quota, the most allowed ({MAX_UNDECLARED_CUSTOM}); \
                         report one of those, or give {resource} a limit in the quota first"
                    );
                    return Err(ControlError::Invalid { field: "resource", message });
                }
            }
        }
        let per = self
            .domain
            .ledger
            .quota(&id)
            .and_then(|q| q.limits.get(resource))
            .and_then(|l| l.window)
            .unwrap_or(allot_core::quantity::Window::Minute);
        let value = match window {
            Some(w) if w != per => w.convert(value, per).ok_or_else(|| ControlError::InvalidAt {
                field: "value".into(),
                message: format!("{value}/{w} is more than this allot can count per {}", per.suffix()),
            })?,
            _ => value,
        };
        Ok((id, value, per))
    }

    /// Store the samples waiting.
    pub(super) fn flush_samples(&mut self) {
        self.flush_samples_between(&mut |_: &mut Self| {});
    }

    /// Store the samples and rollups waiting, [`SAMPLES_PER_TRANSACTION`]
    /// per transaction, calling `between` after each.
    fn flush_samples_between(&mut self, between: &mut dyn FnMut(&mut Self)) {
        self.keep_reports();
        let batch = std::mem::take(&mut self.sampler.pending);
        for part in batch.chunks(SAMPLES_PER_TRANSACTION) {
            let stored = self.recorder.store.put_samples(part);
            self.stored(stored, "samples", part.len());
            between(self);
        }
        let rollups = std::mem::take(&mut self.sampler.pending_rollups);
        for part in rollups.chunks(SAMPLES_PER_TRANSACTION) {
            let stored = self.recorder.store.put_rollups(part);
            self.stored(stored, "rollups", part.len());
            between(self);
        }
        if let Some(e) = self.recorder.checkpoint_error() {
            tracing::warn!(error = %e, "the state store's log could not be checkpointed; it grows until it can");
        }
    }

    fn stored(&mut self, stored: Result<(), allot_store::StoreError>, what: &str, n: usize) {
        match stored {
            Ok(()) => self.recorder.recorded(),
            Err(e) => {
                tracing::error!(error = %e, n, "{what} not stored");
                self.recorder.unrecorded(&e.to_string());
            }
        }
    }

    /// The rollups still open of one agent, per resource.
    pub(super) fn flush_agent_rollups(&mut self, agent: &str) -> Vec<(String, allot_store::rollup::Rollup)> {
        self.sampler.roller.flush_agent(agent)
    }

    /// Store the rollups still open.
    pub(super) fn flush_rollups(&mut self) {
        let mut rollups = std::mem::take(&mut self.sampler.pending_rollups);
        rollups.extend(self.sampler.roller.flush());
        let stored = self.recorder.store.put_rollups(&rollups);
        self.stored(stored, "rollups", rollups.len());
    }

    /// Group totals (SPEC section 5) on the policy side: a warning event and
    /// record when the members' summed usage exceeds a total (at most once a
    /// minute per group and resource); the kernel holds the totals on the
    /// group cgroup (see `backstops`).
    /// Read afresh the working set of every member of a group whose members'
    /// raw memory reaches the margin of its memory total, so the group's
    /// total is judged on fresh figures (`allot_core::working_set`).
    fn refresh_groups_near_their_totals(&mut self) {
        let near: Vec<AgentId> = self
            .domain
            .ledger
            .groups()
            .filter_map(|g| g.totals.get(&Resource::Memory).map(|t| (g.name.clone(), *t)))
            .flat_map(|(name, total)| {
                let members: Vec<AgentId> = self.domain.ledger.members(&name).cloned().collect();
                let raw: u64 = members.iter().filter_map(|m| self.agents.get(m)).map(|a| a.memory_raw).fold(0, u64::saturating_add);
                let watermark = total / 100 * allot_core::working_set::MARGIN_PERCENT;
                if raw >= watermark { members } else { Vec::new() }
            })
            .collect();
        for id in near {
            self.refresh_working_set(&id);
        }
    }

    /// Read an agent's inactive file cache afresh and judge its memory again
    /// (not kept as another sample); whether a figure was read.
    pub(super) fn refresh_working_set(&mut self, id: &AgentId) -> bool {
        let now = self.clock.now();
        let Some(a) = self.agents.get_mut(id) else { return false };
        if a.working_set_at == Some(now) {
            return false;
        }
        let Some(p) = a.proc.as_mut() else { return false };
        let Ok(Some(inactive)) = p.probe.refresh_working_set() else { return false };
        a.working_set_at = Some(now);
        let memory = a.memory_raw.saturating_sub(inactive);
        self.judge(id, Resource::Memory, memory, now);
        true
    }

    fn group_totals(&mut self) {
        let now = self.clock.now();
        let groups: std::collections::BTreeSet<String> =
            self.agents.map.values().filter(|a| a.proc.is_some()).map(|a| a.def.spec.group.clone()).collect();
        for g in groups {
            let Ok(violations) = self.domain.ledger.group_violations(&g) else { continue };
            for v in violations {
                let Ok(key) = AgentId::new(format!("group:{g}")) else { continue };
                let th = Threshold { warning_level: v.total, critical_level: u64::MAX };
                if self.domain.alerts.check(&key, &v.resource, v.usage, th, now).is_none() {
                    continue;
                }
                let detail =
                    format!("members of group {g} use {} {} against a group total of {}", v.usage, v.resource.unit().name(), v.total);
                let data = json!({"group": g, "resource": v.resource.name(), "usage": v.usage, "total": v.total, "outcome": "success", "detail": detail});
                self.recorder.enforcement(super::record::Enforcement {
                    at: now,
                    agent: key.as_str(),
                    resource: v.resource.name(),
                    action: "warn",
                    stage: allot_store::Stage::Done,
                    outcome: allot_store::Outcome::Success,
                    detail: &detail,
                    topic: events::QUOTA_WARNING,
                    data,
                });
            }
        }
    }
}
