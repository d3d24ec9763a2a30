//! Every change to an agent is an [`Intent`]: who asks ([`Source`]) and
//! what ([`Op`]). [`Governor::apply`] is the one place that turns intents
//! into actuator calls: it updates the agent's holds (who holds a freeze or
//! a throttle, in allot-core), writes only what changes the effective kernel
//! settings, and answers with a typed [`Applied`]: done now with its
//! outcome, or a kernel wait that settles on a blocking thread, with the
//! values written (`Values`: a cpu limit in millicores, memory.high in
//! bytes, ...). Callers record the outcome (policy decisions, operator commands, host pressure,
//! lifecycle), so every change is an intent with a recorded outcome.

use super::agents::{Agent, Lifecycle};
use super::{Backend, Governor};
use allot_core::backstops::AgentBackstops;
use allot_core::holds::{Change, Holder, Holds, Throttle};
use allot_core::{AgentId, Resource};
use allot_store::Outcome;
use allot_sys::SysError;
use allot_sys::actuate::{Actuator, Outcome as Written, Settle};
use serde_json::json;
use std::time::Duration;

/// Who asks for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The enforcement policy, for a resource's limit.
    Policy(Resource),
    /// The operator, through the API.
    Operator,
    /// Host memory pressure.
    HostPressure,
    /// The agent's lifecycle (grace over, stop).
    Lifecycle,
    /// The kernel backstops of its quota (at start and when the quota changes).
    Backstop,
}

impl Source {
    fn holder(&self) -> Option<Holder> {
        match self {
            Source::Policy(r) => Some(Holder::Policy(r.clone())),
            Source::Operator => Some(Holder::Operator),
            Source::HostPressure => Some(Holder::HostPressure),
            Source::Lifecycle | Source::Backstop => None,
        }
    }
}

/// What to change.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Op {
    /// Hold the agent frozen.
    Freeze,
    /// Release this source's freeze (the agent thaws when no holder is left).
    Thaw,
    /// Release this source's freeze and throttle (the operator's resume).
    Release,
    /// Release the freezes of every policy resource (the policy's restore).
    ThawPolicy,
    /// Release every hold of every holder (the operator's forced resume).
    ReleaseAll,
    /// Hold a throttle; `fallback_cpu` is used where the throttle asks for memory.high and the host has none.
    Throttle { want: Throttle, fallback_cpu: Option<u64> },
    /// Release this source's throttle.
    Unthrottle,
    /// Termination notice, thaw, SIGTERM; kill when the grace ends.
    Terminate { grace: Duration, reason: String },
    /// Kill the whole tree now.
    Kill,
    /// Write the kernel backstops of the agent's quota.
    Backstops(AgentBackstops),
    /// Write every effective setting of the holds, whatever the kernel has now (an agent taken over).
    Reconcile,
    /// Write the agent's held cpu limit again under its group's cpu total (a group change).
    CapCpu,
}

impl Op {
    /// Whether it changes who holds the agent.
    fn changes_holds(&self) -> bool {
        matches!(self, Op::Freeze | Op::Thaw | Op::ThawPolicy | Op::Release | Op::ReleaseAll | Op::Throttle { .. } | Op::Unthrottle)
    }
}

/// A change to an agent.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Intent {
    pub(super) agent: AgentId,
    pub(super) source: Source,
    pub(super) op: Op,
}

/// The values an intent wrote, in internal units, by setting:
/// `cpu_millicores`, `memory_high`, `memory_max`, `pids_max`, `cpu_weight`
/// (`null`: the limit was lifted) and `frozen`. Recorded as `written` in the
/// event's data and the enforcement record.
pub(super) type Values = serde_json::Map<String, serde_json::Value>;

/// The result of carrying out an intent.
#[derive(Debug)]
pub(super) enum Applied {
    /// Done, with its outcome and what was written or why it failed.
    Now { outcome: Outcome, detail: String, written: Values },
    /// Written; the kernel finishes it (a freeze taking hold, a tree emptying) on a blocking thread.
    Settling { detail: String, settle: Settle, written: Values },
}

impl Applied {
    fn failed(detail: impl Into<String>) -> Self {
        Applied::Now { outcome: Outcome::Failure, detail: detail.into(), written: Values::new() }
    }

    fn now(outcome: Outcome, detail: impl Into<String>) -> Self {
        Applied::Now { outcome, detail: detail.into(), written: Values::new() }
    }

    fn settling(detail: impl Into<String>, settle: Settle) -> Self {
        Applied::Settling { detail: detail.into(), settle, written: Values::new() }
    }

    /// Whether it failed at once.
    fn is_failure(&self) -> bool {
        matches!(self, Applied::Now { outcome: Outcome::Failure, .. })
    }

    fn set_written(&mut self, values: Values) {
        match self {
            Applied::Now { written, .. } | Applied::Settling { written, .. } => *written = values,
        }
    }
}

/// The effective settings that differ between `before` and `after` (or all of `after` when `all`), as [`Values`].
fn values_of(before: allot_core::holds::Effective, after: allot_core::holds::Effective, all: bool) -> Values {
    let mut v = Values::new();
    if all || before.cpu_millicores != after.cpu_millicores {
        v.insert("cpu_millicores".into(), json!(after.cpu_millicores));
    }
    if all || before.memory_high != after.memory_high {
        v.insert("memory_high".into(), json!(after.memory_high));
    }
    if all || before.frozen != after.frozen {
        v.insert("frozen".into(), json!(after.frozen));
    }
    v
}

/// The backstop values written (those whose write succeeded).
fn backstop_values(b: &AgentBackstops, notes: &[serde_json::Value]) -> Values {
    let ok = |what: &str| notes.iter().any(|n| n["what"] == what && n["outcome"] == "success");
    let mut v = Values::new();
    if ok("cpu weight") {
        v.insert("cpu_weight".into(), json!(b.cpu_weight));
    }
    for (what, key, value) in [
        ("memory ceiling at burst", "memory_max", b.memory_max),
        ("memory.high at hard", "memory_high", b.memory_high),
        ("pids.max", "pids_max", b.pids_max),
    ] {
        if let Some(x) = value.filter(|_| ok(what)) {
            v.insert(key.into(), json!(x));
        }
    }
    v
}

/// What an actuator wrote, as text: `path <- value; ...; detail`.
pub(super) fn describe(o: &Written) -> String {
    let writes: Vec<String> = o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect();
    match (writes.is_empty(), o.detail.is_empty()) {
        (true, _) => o.detail.clone(),
        (false, true) => writes.join("; "),
        (false, false) => format!("{}; {}", writes.join("; "), o.detail),
    }
}

/// Write an agent's cpu limit, never above its group's cpu total `cap`: on
/// cgroup v1 a child's CFS quota above its parent's is refused (EINVAL), and
/// above the group's it could not be used anyway. The note says when it was lowered.
fn write_cpu(act: &mut dyn Actuator, want: Option<u64>, cap: Option<u64>) -> Result<String, SysError> {
    let written = match (want, cap) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (w, _) => w,
    };
    let o = act.set_cpu_limit(written)?;
    Ok(match (want, written) {
        (Some(m), Some(w)) if w < m => format!("cpu limited to {m}m, written as {w}m (the group's cpu total): {}", describe(&o)),
        (Some(m), _) => format!("cpu limited to {m}m: {}", describe(&o)),
        (None, _) => format!("cpu limit lifted: {}", describe(&o)),
    })
}

/// Write what a change of the effective settings needs (cpu under `cap`); a freeze returns its settle.
fn write_change(change: Change, act: &mut dyn Actuator, cap: Option<u64>, notes: &mut Vec<String>) -> Result<Option<Settle>, SysError> {
    if let Some(cpu) = change.cpu() {
        notes.push(write_cpu(act, cpu, cap)?);
    }
    if let Some(high) = change.memory_high() {
        notes.push(describe(&act.set_memory_high(high)?));
    }
    match change.freeze() {
        Some(false) => notes.push(format!("thawed: {}", describe(&act.thaw()?))),
        Some(true) => {
            let settle = act.freeze()?;
            notes.push(format!("freezing: {}", describe(settle.started())));
            return Ok((!settle.is_done()).then_some(settle));
        }
        None => {}
    }
    Ok(None)
}

fn held_note(change: &Change, holders: &[Holder], what: &str) -> Option<String> {
    (change.is_noop() && !holders.is_empty())
        .then(|| format!("{what} already in force, held by {}", holders.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
}

/// Change the holds as the intent says; the change of the effective settings.
fn change_holds(a: &mut Agent, op: &Op, holder: Option<Holder>) -> Option<Change> {
    let before = a.holds.effective();
    match (op, holder) {
        (Op::Freeze, Some(h)) => Some(a.holds.freeze(h)),
        (Op::Thaw, Some(h)) => Some(a.holds.thaw(&h)),
        (Op::Unthrottle, Some(h)) => Some(a.holds.release_throttle(&h)),
        (Op::Release, Some(h)) => Some(a.holds.release(&h)),
        (Op::ThawPolicy, _) => {
            for h in a.holds.freeze_holders().into_iter().filter(|h| matches!(h, Holder::Policy(_))) {
                a.holds.thaw(&h);
            }
            Some(Change { before, after: a.holds.effective() })
        }
        (Op::ReleaseAll, _) => {
            a.holds = Holds::default();
            Some(Change { before, after: a.holds.effective() })
        }
        _ => None,
    }
}

/// Hold a throttle, falling back to a cpu limit where memory.high is not supported
/// (learned once per agent, so later throttles go straight to the fallback).
fn throttle(a: &mut Agent, h: Holder, want: Throttle, fallback_cpu: Option<u64>, cap: Option<u64>) -> Applied {
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    let act = proc.actuator.as_mut();
    let mut notes = Vec::new();
    let fallback = Throttle { cpu_millicores: fallback_cpu, memory_high: None };
    let wants_memory_high = want.memory_high.is_some() && fallback_cpu.is_some();
    if wants_memory_high && a.no_memory_high {
        let change = a.holds.throttle(h, fallback);
        return match write_change(change, act, cap, &mut notes) {
            Ok(_) => Applied::now(Outcome::Fallback, format!("no memory.high here: {}", notes.join("; "))),
            Err(e) => Applied::failed(e.to_string()),
        };
    }
    let before = a.holds.effective();
    let change = a.holds.throttle(h.clone(), want);
    match write_change(change, act, cap, &mut notes) {
        Err(SysError::Unsupported { what, why }) if wants_memory_high => {
            a.no_memory_high = true;
            notes.push(format!("{what} is not supported here ({why}); cpu limit instead"));
            a.holds.throttle(h, fallback);
            // Against the settings before this throttle: its memory.high was never written.
            match write_change(Change { before, after: a.holds.effective() }, act, cap, &mut notes) {
                Ok(_) => Applied::now(Outcome::Fallback, notes.join("; ")),
                Err(e) => Applied::failed(format!("{}; {e}", notes.join("; "))),
            }
        }
        Err(e) => Applied::failed(e.to_string()),
        Ok(_) => {
            notes.extend(held_note(&change, &a.holds.throttle_holders(), "throttle"));
            Applied::now(Outcome::Success, notes.join("; "))
        }
    }
}

/// The termination notice, a thaw so it can be handled (throttles stay), SIGTERM.
fn terminate(a: &mut Agent, grace: Duration, reason: &str, now_ms: u64) -> Applied {
    let pid = a.pid();
    let grace_ms = allot_core::time::duration_millis(grace);
    let sent = a.channel.send("termination", json!({"reason": reason, "grace_ms": grace_ms}), now_ms, pid);
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    for h in a.holds.freeze_holders() {
        a.holds.thaw(&h);
    }
    let _ = proc.actuator.thaw();
    let res = proc.actuator.signal(rustix::process::Signal::TERM);
    a.lifecycle = Lifecycle::Terminating(reason.to_owned());
    let notice = sent.unwrap_or_else(|e| format!("notice not delivered: {e}"));
    match res {
        Ok(o) => Applied::now(Outcome::Success, format!("notice: {notice}; {}; kill after {grace:?}", o.detail)),
        Err(e) => Applied::failed(format!("notice: {notice}; SIGTERM failed: {e}; kill after {grace:?}")),
    }
}

/// Kill the tree: every hold is lifted first (a throttled or frozen tree takes long to die), then the kill.
fn kill(a: &mut Agent) -> Applied {
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    let act = proc.actuator.as_mut();
    let held = std::mem::take(&mut a.holds).effective();
    let mut notes = Vec::new();
    if held.cpu_millicores.is_some() {
        if let Ok(o) = act.set_cpu_limit(None) {
            notes.push(format!("cpu limit lifted: {}", describe(&o)));
        }
    }
    if held.memory_high.is_some() {
        let _ = act.set_memory_high(None);
    }
    if held.frozen {
        if let Ok(o) = act.thaw() {
            notes.push(format!("thawed: {}", describe(&o)));
        }
    }
    let first = |o: &Written| notes.iter().cloned().chain(std::iter::once(describe(o))).collect::<Vec<_>>().join("; ");
    match act.kill() {
        Ok(settle) if settle.is_done() => Applied::now(Outcome::Success, first(settle.started())),
        Ok(settle) => Applied::settling(first(settle.started()), settle),
        Err(e) => Applied::failed(format!("kill failed: {e}")),
    }
}

/// Write a change of the holds and say what happened; `hold` says whether the op adds a hold or releases one.
fn write_holds(a: &mut Agent, change: Change, hold: bool, cap: Option<u64>) -> Applied {
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    let mut notes = Vec::new();
    match write_change(change, proc.actuator.as_mut(), cap, &mut notes) {
        Err(e) => Applied::failed(e.to_string()),
        Ok(Some(settle)) => Applied::settling(notes.join("; "), settle),
        Ok(None) => {
            let (frozen_by, throttled_by) = (a.holds.freeze_holders(), a.holds.throttle_holders());
            if hold && change.is_noop() {
                notes.extend(held_note(&change, &frozen_by, "freeze"));
            } else if !hold && !frozen_by.is_empty() {
                notes.push(format!("still frozen, held by {}", list(&frozen_by)));
            } else if !hold && !throttled_by.is_empty() {
                notes.push(format!("still throttled, held by {}", list(&throttled_by)));
            }
            if notes.is_empty() {
                notes.push("nothing to change".to_owned());
            }
            Applied::now(Outcome::Success, notes.join("; "))
        }
    }
}

fn note(what: &str, r: Result<Written, SysError>) -> serde_json::Value {
    match r {
        Ok(o) => {
            json!({"what": what, "outcome": "success", "writes": o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect::<Vec<_>>()})
        }
        Err(e) => json!({"what": what, "outcome": "failure", "error": e.to_string()}),
    }
}

/// Write an agent's backstops; one note per write, with its outcome.
pub(super) fn backstops(act: &mut dyn Actuator, b: &AgentBackstops) -> Vec<serde_json::Value> {
    let mut notes = vec![note("cpu weight", act.set_cpu_weight(b.cpu_weight))];
    if let Some(v) = b.memory_max {
        notes.push(note("memory ceiling at burst", act.set_memory_max(Some(v))));
    }
    if let Some(v) = b.memory_high {
        notes.push(note("memory.high at hard", act.set_memory_high(Some(v))));
    }
    if let Some(v) = b.pids_max {
        notes.push(note("pids.max", act.set_pids_max(Some(v))));
    }
    notes
}

/// Write a group's totals on its cgroup; one note per total.
pub(super) fn group_totals(ga: &mut dyn Actuator, totals: &std::collections::BTreeMap<Resource, u64>) -> Vec<serde_json::Value> {
    totals
        .iter()
        .map(|(r, v)| {
            let res = match r {
                Resource::Memory => ga.set_memory_max(Some(*v)),
                Resource::Processes | Resource::Threads => ga.set_pids_max(Some(*v)),
                Resource::Cpu => ga.set_cpu_limit(Some(*v)),
                // Only these have a kernel total (`allot_core::backstops::group` gives no other).
                _ => return json!({"resource": r.name(), "total": v, "outcome": "no kernel total for this resource"}),
            };
            json!({"resource": r.name(), "total": v, "outcome": res.map_or_else(|e| e.to_string(), |_| "success".into())})
        })
        .collect()
}

/// Clear a group's totals of `resources` on its cgroup (a refused change
/// undone); each failure is returned with its resource.
pub(super) fn clear_group_totals(ga: &mut dyn Actuator, resources: &[Resource]) -> Vec<(Resource, SysError)> {
    resources
        .iter()
        .filter_map(|r| {
            let res = match r {
                Resource::Memory => ga.set_memory_max(None),
                Resource::Cpu => ga.set_cpu_limit(None),
                Resource::Processes | Resource::Threads => ga.set_pids_max(None),
                _ => return None,
            };
            res.err().map(|e| (r.clone(), e))
        })
        .collect()
}

/// Write the holds' effective settings in full: a new governor does not know what the kernel has.
fn reconcile(a: &mut Agent, cap: Option<u64>) -> Applied {
    let e = a.holds.effective();
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    let act = proc.actuator.as_mut();
    let mut notes = Vec::new();
    match write_cpu(act, e.cpu_millicores, cap) {
        Ok(note) => notes.push(note),
        Err(err) => return Applied::failed(err.to_string()),
    }
    match act.set_memory_high(e.memory_high) {
        Ok(o) => notes.push(describe(&o)),
        // Where there is no memory.high there is none to clear.
        Err(SysError::Unsupported { .. }) if e.memory_high.is_none() => {}
        Err(err) => return Applied::failed(err.to_string()),
    }
    if !e.frozen {
        return match act.thaw() {
            Ok(o) => Applied::now(Outcome::Success, format!("{}; not frozen: {}", notes.join("; "), describe(&o))),
            Err(err) => Applied::failed(err.to_string()),
        };
    }
    match act.freeze() {
        Ok(settle) if settle.is_done() => Applied::now(Outcome::Success, format!("{}; frozen", notes.join("; "))),
        Ok(settle) => Applied::settling(format!("{}; freezing: {}", notes.join("; "), describe(settle.started())), settle),
        Err(err) => Applied::failed(err.to_string()),
    }
}

/// The held cpu limit written again under `cap` (nothing to write when no one holds a cpu throttle).
fn cap_cpu(a: &mut Agent, cap: Option<u64>) -> Applied {
    let Some(want) = a.holds.effective().cpu_millicores else {
        return Applied::now(Outcome::Success, "no cpu limit held");
    };
    let Some(proc) = a.proc.as_mut() else { return Applied::failed("no process") };
    match write_cpu(proc.actuator.as_mut(), Some(want), cap) {
        Ok(note) => Applied::now(Outcome::Success, note),
        Err(e) => Applied::failed(e.to_string()),
    }
}

fn list(holders: &[Holder]) -> String {
    holders.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl<B: Backend> Governor<B> {
    /// The cpu total of an agent's group in force on the group cgroup (what
    /// its own cpu limit is written under), when it runs in a cgroup.
    pub(super) fn cpu_cap(&self, id: &AgentId) -> Option<u64> {
        self.agents.get(id)?.proc.as_ref()?.cgroup.as_ref()?;
        let ledger = &self.domain.ledger;
        let g = ledger.group(&ledger.quota(id)?.group)?;
        allot_core::backstops::group(g, ledger.member_count(&g.name)).get(&Resource::Cpu).copied()
    }

    /// Carry out an intent: the one path by which anything changes an agent.
    pub(super) fn apply(&mut self, intent: Intent) -> Applied {
        let _span = tracing::info_span!("agent", id = %intent.agent).entered();
        tracing::debug!(source = ?intent.source, op = ?intent.op, "intent");
        let now = self.clock.now();
        let cap = self.cpu_cap(&intent.agent);
        let Some(a) = self.agents.get_mut(&intent.agent) else { return Applied::failed(format!("no agent {}", intent.agent)) };
        if a.proc.is_none() {
            return Applied::failed(format!("agent {} is {}", intent.agent, a.state_name()));
        }
        let holder = intent.source.holder();
        let saved = a.holds.clone();
        let mut kill_at = None;
        let applied = match &intent.op {
            Op::Throttle { want, fallback_cpu } => match holder {
                Some(h) => throttle(a, h, *want, *fallback_cpu, cap),
                None => Applied::failed("a throttle needs a holder"),
            },
            Op::Terminate { grace, reason } => {
                kill_at = Some((now.plus(*grace), a.incarnation));
                terminate(a, *grace, reason, now.as_millis())
            }
            Op::Backstops(b) => match a.proc.as_mut() {
                Some(p) => {
                    let notes = backstops(p.actuator.as_mut(), b);
                    let failed = notes.iter().any(|n| n["outcome"] == "failure");
                    let outcome = if failed { Outcome::Failure } else { Outcome::Success };
                    let values = backstop_values(b, &notes);
                    let mut applied = Applied::now(outcome, serde_json::Value::Array(notes).to_string());
                    applied.set_written(values);
                    applied
                }
                None => Applied::failed("no process"),
            },
            Op::Kill => kill(a),
            Op::Reconcile => reconcile(a, cap),
            Op::CapCpu => cap_cpu(a, cap),
            op => match change_holds(a, op, holder) {
                Some(change) => write_holds(a, change, matches!(op, Op::Freeze), cap),
                None => Applied::failed(format!("{op:?} needs a holder")),
            },
        };
        let mut applied = applied;
        if intent.op.changes_holds() && applied.is_failure() {
            // The kernel refused: no hold it does not have.
            a.holds = saved.clone();
        }
        if !applied.is_failure() && !matches!(intent.op, Op::Backstops(_)) {
            // What the kernel was given: the settings the change of holds moved (all of them on a reconcile).
            let mut values = values_of(saved.effective(), a.holds.effective(), matches!(intent.op, Op::Reconcile));
            // A cpu limit is written under the group's cpu total.
            if let (Some(c), Some(m)) = (cap, values.get("cpu_millicores").and_then(serde_json::Value::as_u64)) {
                values.insert("cpu_millicores".into(), json!(m.min(c)));
            }
            applied.set_written(values);
        }
        let holds_changed = a.holds != saved || matches!(intent.op, Op::Terminate { .. });
        if let Some((at, incarnation)) = kill_at {
            a.kill_at = Some(at);
            self.timers.kill(at, &intent.agent, incarnation);
        }
        if holds_changed {
            // A restarted governor keeps the holds it can stand behind.
            // A failure is logged and counted; the enforcement itself goes on.
            let _ = self.store_agent(&intent.agent);
        }
        applied
    }
}
