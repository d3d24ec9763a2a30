//! Carrying out the policy's decisions: each one goes to an actuator (or the
//! agent channel), its real outcome is published as an event and recorded
//! in the enforcement history.

use super::{AgentState, Backend, CustomResult, Governor, Timer};
use allot_core::degradation::DegradationEvent;
use allot_core::group::CustomHandler;
use allot_core::policy::Hold;
use allot_core::{Decision, DecisionKind, Resource, events};
use allot_sys::actuate::Outcome;
use serde_json::{Value, json};
use std::time::Duration;

fn describe(o: &Outcome) -> String {
    let writes: Vec<String> = o.writes.iter().map(|w| format!("{} <- {}", w.path.display(), w.value)).collect();
    match (writes.is_empty(), o.detail.is_empty()) {
        (true, _) => o.detail.clone(),
        (false, true) => writes.join("; "),
        (false, false) => format!("{}; {}", writes.join("; "), o.detail),
    }
}

impl<B: Backend> Governor<B> {
    pub(super) fn execute(&mut self, d: Decision) {
        let at = d.at;
        let id = d.agent.clone();
        let cpu_hard = self.ledger.quota(&id).and_then(|q| q.limits.get(&Resource::Cpu)).map(|l| l.hard);
        let Some(r) = self.agents.get_mut(&id) else { return };
        let pid = r.started.as_ref().map(|s| s.leader.pid());
        let now_ms = at.as_millis();
        let usage_cpu = r.usage.get(&Resource::Cpu).copied().unwrap_or(0);
        let usage_res = r.usage.get(&d.resource).copied().unwrap_or(0);
        let (action, outcome, detail): (String, &str, String) = match &d.kind {
            DecisionKind::Warn { violation } => {
                let which = match violation.kind {
                    allot_core::ViolationKind::Soft => "soft limit",
                    allot_core::ViolationKind::Burst => "hard limit (within burst)",
                    allot_core::ViolationKind::Hard => "hard limit",
                };
                ("warn".into(), "success", format!("{} {} over {which} {}", violation.resource, violation.usage, violation.limit))
            }
            DecisionKind::Scheduled { action, due } => (
                format!("{action} (scheduled)"),
                "success",
                format!("{action} due at {} unless the violation clears", super::clock::rfc3339(*due)),
            ),
            DecisionKind::CancelPending { action, usage } => {
                (action.name().to_owned(), "cancelled", format!("violation cleared (usage {usage}) before the delay ended"))
            }
            DecisionKind::Throttle { factor, interim, .. } => {
                let Some(st) = r.started.as_mut() else { return };
                let mut notes = Vec::new();
                let mut ok = true;
                let mut fallback = false;
                if d.resource == Resource::Memory {
                    let target = (usage_res as f64 * factor) as u64;
                    match st.actuator.set_memory_high(Some(target.max(1 << 20))) {
                        Ok(o) => notes.push(describe(&o)),
                        Err(e) => {
                            notes.push(format!("{e}"));
                            fallback = true;
                        }
                    }
                }
                if d.resource != Resource::Memory || fallback {
                    // CPU quota at factor x current use (for a cpu violation, of at
                    // most the hard limit, so that usage settles under it): slows
                    // every resource's growth.
                    let base = match cpu_hard.filter(|_| d.resource == Resource::Cpu) {
                        Some(hard) => usage_cpu.min(hard),
                        None => usage_cpu,
                    };
                    let limit = ((base as f64 * factor) as u64).max(20);
                    match st.actuator.set_cpu_limit(Some(limit)) {
                        Ok(o) => notes.push(format!("cpu limited to {limit}m: {}", describe(&o))),
                        Err(e) => {
                            notes.push(format!("cpu limit failed: {e}"));
                            ok = false;
                        }
                    }
                }
                r.state = AgentState::Throttled;
                let msg = json!({"resource": d.resource.name(), "factor": factor, "interim": interim});
                if let Ok(sent) = r.channel.send("throttle", msg, now_ms, pid) {
                    notes.push(sent);
                }
                let outcome = match (ok, fallback || d.resource != Resource::Memory && d.resource != Resource::Cpu) {
                    (false, _) => "failure",
                    (true, true) => "fallback",
                    (true, false) => "success",
                };
                ("throttle".into(), outcome, format!("factor {factor}: {}", notes.join("; ")))
            }
            DecisionKind::Suspend { after_scale_down, .. } => {
                let Some(st) = r.started.as_mut() else { return };
                let res = st.actuator.freeze();
                let why = if *after_scale_down { "scale_down unmet at its deadline; " } else { "" };
                let _ = r.channel.send("suspend", json!({"resource": d.resource.name()}), now_ms, None);
                match res {
                    Ok(o) => {
                        r.state = AgentState::Suspended;
                        ("suspend".into(), "success", format!("{why}{}", describe(&o)))
                    }
                    Err(e) => ("suspend".into(), "failure", format!("{why}{e}")),
                }
            }
            DecisionKind::Terminate { grace, violation } => {
                let Some(st) = r.started.as_mut() else { return };
                let reason =
                    format!("terminated by allot: {} at {} over hard limit {}", violation.resource, violation.usage, violation.limit);
                let sent = r.channel.send(
                    "termination",
                    json!({"reason": reason, "grace_ms": allot_core::time::duration_millis(*grace)}),
                    now_ms,
                    pid,
                );
                let _ = st.actuator.thaw();
                let res = st.actuator.signal(rustix::process::Signal::TERM);
                r.terminating = Some(reason);
                r.state = AgentState::Terminating;
                self.timers.push((at.plus(*grace), Timer::Kill(id.clone())));
                match res {
                    Ok(o) => (
                        "terminate".into(),
                        "success",
                        format!("notice: {}; {}; kill after {:?}", sent.unwrap_or_default(), o.detail, grace),
                    ),
                    Err(e) => ("terminate".into(), "failure", format!("SIGTERM failed: {e}; kill after {grace:?}")),
                }
            }
            DecisionKind::ScaleDown { target, deadline, .. } => {
                let msg = json!({"resource": d.resource.name(), "target": target, "deadline": super::clock::rfc3339(*deadline)});
                match r.channel.send("scale_down", msg, now_ms, pid) {
                    Ok(sent) => (
                        "scale_down".into(),
                        "success",
                        format!("request delivered: {sent}; met only if measured usage < {target} before the deadline"),
                    ),
                    Err(e) => ("scale_down".into(), "failure", e),
                }
            }
            DecisionKind::ScaleDownMet { target, usage } => {
                ("scale_down".into(), "success", format!("met: measured {usage} < target {target}"))
            }
            DecisionKind::Migrate { .. } => {
                let Some(st) = r.started.as_mut() else { return };
                match st.actuator.freeze() {
                    Ok(o) => {
                        r.state = AgentState::Suspended;
                        ("migrate".into(), "fallback", format!("no cluster to migrate to: suspended instead; {}", describe(&o)))
                    }
                    Err(e) => ("migrate".into(), "failure", format!("no cluster; suspend fallback failed: {e}")),
                }
            }
            DecisionKind::Custom { .. } => {
                let handler = self.ledger.quota(&id).and_then(|q| q.custom_handler.clone());
                match handler {
                    Some(h) => {
                        let tx = self.custom_tx.clone();
                        let payload = serde_json::to_value(&d).unwrap_or(Value::Null);
                        let decision = d.clone();
                        tokio::spawn(async move {
                            let (outcome, detail) = run_handler(&h, &payload).await;
                            let _ = tx.send(CustomResult { decision, outcome, detail });
                        });
                        r.last_action = "custom (running)".into();
                        return;
                    }
                    None => ("custom".into(), "failure", "no custom_handler configured".into()),
                }
            }
            DecisionKind::Restore { from } => {
                let Some(st) = r.started.as_mut() else { return };
                let res = match from {
                    Hold::Throttle => st.actuator.set_cpu_limit(None).map(|mut o| {
                        // memory.high only exists where it was set (v2); its absence is not a failure.
                        if let Ok(m) = st.actuator.set_memory_high(None) {
                            o.writes.extend(m.writes);
                        }
                        o
                    }),
                    Hold::Suspend => st.actuator.thaw(),
                };
                let _ = r.channel.send("restore", json!({"from": from, "resource": d.resource.name()}), now_ms, pid);
                match res {
                    Ok(o) => {
                        r.state = AgentState::Running;
                        ("restore".into(), "success", describe(&o))
                    }
                    Err(e) => ("restore".into(), "failure", e.to_string()),
                }
            }
            DecisionKind::Degradation { event } => {
                let (kind, topic) = match event {
                    DegradationEvent::Plan { .. } | DegradationEvent::Rollback { .. } => ("degradation", events::DEGRADATION_PLAN),
                    DegradationEvent::Recovery { .. } => ("recovery", events::RECOVERY_STAGE),
                };
                let payload = serde_json::to_value(event).unwrap_or(Value::Null);
                let sent = r.channel.send(kind, payload.clone(), now_ms, pid);
                let data = json!({"resource": d.resource.name(), "event": payload, "delivered": sent.unwrap_or_else(|e| e)});
                self.emit(at, topic, Some(id.as_str()), data);
                return;
            }
        };
        r.last_action =
            if outcome == "success" { format!("{action} {}", d.resource) } else { format!("{action} {} ({outcome})", d.resource) };
        let topic = events::decision_topic(&d.kind);
        let decision = serde_json::to_value(&d).unwrap_or(Value::Null);
        let data = json!({"decision": decision, "resource": d.resource.name(), "outcome": outcome, "detail": detail});
        let seq = self.emit(at, &topic, Some(id.as_str()), data);
        if let Err(e) = self.store.record_enforcement(seq, now_ms, id.as_str(), d.resource.name(), &action, outcome, &detail, &decision) {
            eprintln!("allot: error: {e}");
        }
    }

    pub(super) fn record_custom(&mut self, res: CustomResult) {
        let d = res.decision;
        let now = self.clock.now();
        if let Some(r) = self.agents.get_mut(&d.agent) {
            r.last_action = format!("custom {}", d.resource);
        }
        let decision = serde_json::to_value(&d).unwrap_or(Value::Null);
        let data = json!({"decision": decision, "resource": d.resource.name(), "outcome": res.outcome, "detail": res.detail});
        let seq = self.emit(now, &events::enforcement_topic("custom"), Some(d.agent.as_str()), data);
        let _ = self.store.record_enforcement(
            seq,
            now.as_millis(),
            d.agent.as_str(),
            d.resource.name(),
            "custom",
            res.outcome,
            &res.detail,
            &decision,
        );
    }
}

/// Run a custom handler with the violation as JSON: a command (on stdin) or
/// a URL (HTTP POST). At most 10 s.
async fn run_handler(h: &CustomHandler, payload: &Value) -> (&'static str, String) {
    let body = payload.to_string();
    let work = async {
        match h {
            CustomHandler::Command(cmd) => {
                use tokio::io::AsyncWriteExt;
                let (prog, args) = cmd.split_first().ok_or("empty command")?;
                let mut child = tokio::process::Command::new(prog)
                    .args(args)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot run {prog}: {e}"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(body.as_bytes()).await.map_err(|e| e.to_string())?;
                }
                let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&out.stdout).trim().chars().take(200).collect::<String>();
                if out.status.success() {
                    Ok(format!("{prog} ran: {} {text}", out.status))
                } else {
                    Err(format!("{prog} failed: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
                }
            }
            CustomHandler::Url(url) => post(url, &body).await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(d)) => ("success", d),
        Ok(Err(e)) => ("failure", e),
        Err(_) => ("failure", "handler did not finish within 10 s".into()),
    }
}

/// A minimal HTTP/1.1 POST for `http://` URLs.
async fn post(url: &str, body: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
    let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.lines().next().unwrap_or("").to_owned();
    if status.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')) {
        Ok(format!("POST {url}: {status}"))
    } else {
        Err(format!("POST {url}: {status}"))
    }
}
