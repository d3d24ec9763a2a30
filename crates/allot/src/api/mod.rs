//! The daemon's HTTP API on a Unix socket (axum).
//!
//! Who may do what is decided by the caller's peer credentials
//! (SO_PEERCRED): the socket's owner and root are the operator and may do
//! everything; a process that belongs to an agent (its pid is in the
//! agent's tree or cgroup) may read its own agent and events and nothing
//! else; anyone else is refused.
//!
//! Routes: `GET /healthz`, `GET /readyz`, `GET /v1/agents`,
//! `GET /v1/agents/{id}`, `POST /v1/agents/{id}/{suspend|resume|terminate}`,
//! `GET /v1/events?since=SEQ&topic=GLOB` (server-sent events, resumable with
//! `since` or `Last-Event-ID`), `GET /metrics` (Prometheus text format).

use crate::governor::control::{Control, ControlError, OperatorAction};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// The caller's credentials, from the socket.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Peer { uid: cred.map(|c| c.uid()), pid: cred.and_then(|c| c.pid()) }
    }
}

/// Shared by every request.
#[derive(Debug)]
pub struct Api {
    control: mpsc::UnboundedSender<Control>,
    state: PathBuf,
    owner_uid: u32,
}

type Shared = Arc<Api>;

enum Caller {
    Operator,
    Agent(String),
    Stranger,
}

/// A JSON error `{"error": {"code", "message"}}` with a status.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

fn forbidden() -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", "not allowed for this caller (decided by the socket's peer credentials)")
}

async fn ask<T>(api: &Api, make: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    api.control.send(make(tx)).map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the governor is not running"))?;
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the governor did not answer in 10 s"))?
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the governor stopped"))
}

async fn caller(api: &Api, peer: Peer) -> Caller {
    match peer.uid {
        Some(uid) if uid == api.owner_uid || uid == 0 => return Caller::Operator,
        None => return Caller::Stranger,
        _ => {}
    }
    let Some(pid) = peer.pid.and_then(|p| u32::try_from(p).ok()) else { return Caller::Stranger };
    match ask(api, |tx| Control::Owner(pid, tx)).await {
        Ok(Some(agent)) => Caller::Agent(agent),
        _ => Caller::Stranger,
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(api): State<Shared>) -> Response {
    match ask(&api, Control::List).await {
        Ok(_) => "ready\n".into_response(),
        Err(r) => r,
    }
}

async fn list(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    let who = caller(&api, peer).await;
    let all = match ask(&api, Control::List).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match who {
        Caller::Operator => Json(all).into_response(),
        Caller::Agent(me) => Json(all.into_iter().filter(|a| a.id == me).collect::<Vec<_>>()).into_response(),
        Caller::Stranger => forbidden(),
    }
}

async fn one(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>, Path(id): Path<String>) -> Response {
    match caller(&api, peer).await {
        Caller::Operator => {}
        Caller::Agent(me) if me == id => {}
        _ => return forbidden(),
    }
    match ask(&api, Control::List).await {
        Ok(all) => match all.into_iter().find(|a| a.id == id) {
            Some(a) => Json(a).into_response(),
            None => error(StatusCode::NOT_FOUND, "not_found", format!("no agent {id:?}")),
        },
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActQuery {
    cpu: Option<String>,
}

async fn act(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((id, action)): Path<(String, String)>,
    q: Result<Query<ActQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let Ok(Query(q)) = q else {
        return field_error("cpu", "the only query parameter is cpu, for throttle (such as ?cpu=200m)");
    };
    let action = match action.as_str() {
        "suspend" => OperatorAction::Suspend,
        "resume" => OperatorAction::Resume,
        "terminate" => OperatorAction::Terminate,
        "clear" => OperatorAction::Clear,
        "throttle" => {
            let Some(cpu) = q.cpu else { return field_error("cpu", "throttle needs ?cpu=QUANTITY, such as 200m") };
            match allot_core::quantity::parse("cpu", allot_core::Unit::Millicores, &cpu) {
                Ok(v) if v.value > 0 => OperatorAction::Throttle(v.value),
                Ok(_) => return field_error("cpu", "must be above 0"),
                Err(e) => return field_error("cpu", e.to_string()),
            }
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown action {other:?}: suspend, resume, terminate, throttle or clear"),
            );
        }
    };
    match ask(&api, |tx| Control::Act(id.clone(), action, tx)).await {
        Ok(Ok(detail)) => Json(json!({"agent": id, "action": action.name(), "outcome": "success", "detail": detail})).into_response(),
        Ok(Err(ControlError { status, message })) => {
            let code = match status {
                404 => "not_found",
                409 => "conflict",
                _ => "failed",
            };
            error(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), code, message)
        }
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    since: Option<u64>,
    topic: Option<String>,
}

async fn events(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "query parameters: since (a sequence number) and topic (a glob)");
    };
    let only = match caller(&api, peer).await {
        Caller::Operator => None,
        Caller::Agent(me) => Some(me),
        Caller::Stranger => return forbidden(),
    };
    let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut since = last_id.or(q.since).unwrap_or(0);
    let store = match allot_store::Store::open_read_only(&api.state) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    };
    let (tx, rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(256);
    tokio::spawn(async move {
        loop {
            let batch = store.events_since(since, 1000).unwrap_or_default();
            for e in batch {
                since = e.seq;
                if only.as_deref().is_some_and(|me| e.agent.as_deref() != Some(me)) {
                    continue;
                }
                if q.topic.as_deref().is_some_and(|g| !allot_core::events::topic_matches(g, &e.topic)) {
                    continue;
                }
                let data = json!({"seq": e.seq, "at_ms": e.at_ms, "topic": e.topic, "agent": e.agent, "data": e.data});
                let ev = Event::default().id(e.seq.to_string()).event(e.topic.clone()).data(data.to_string());
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Sse::new(tokio_stream_from(rx)).keep_alive(KeepAlive::default()).into_response()
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn metrics(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let all = match ask(&api, Control::List).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut out = String::new();
    out.push_str(
        "# HELP allot_agent_usage Latest measured usage of an agent, in the resource's internal unit.\n# TYPE allot_agent_usage gauge\n",
    );
    for a in &all {
        for (r, v) in &a.usage {
            let unit = r.parse::<allot_core::Resource>().map_or("count", |x| x.unit().name());
            out.push_str(&format!("allot_agent_usage{{agent=\"{}\",resource=\"{r}\",unit=\"{unit}\"}} {v}\n", a.id));
        }
    }
    out.push_str("# HELP allot_agent_limit An agent's limit, in the resource's internal unit.\n# TYPE allot_agent_limit gauge\n");
    for a in &all {
        if let Some(limits) = a.quota["limits"].as_object() {
            for (r, l) in limits {
                for kind in ["soft", "hard", "burst"] {
                    if let Some(v) = l[kind].as_u64() {
                        out.push_str(&format!("allot_agent_limit{{agent=\"{}\",resource=\"{r}\",kind=\"{kind}\"}} {v}\n", a.id));
                    }
                }
            }
        }
    }
    out.push_str("# HELP allot_agent_up Whether the agent runs (1) or has exited (0), by state.\n# TYPE allot_agent_up gauge\n");
    for a in &all {
        out.push_str(&format!(
            "allot_agent_up{{agent=\"{}\",group=\"{}\",state=\"{}\"}} {}\n",
            a.id,
            a.group,
            a.state,
            u8::from(a.state != "exited")
        ));
    }
    if let Ok(groups) = ask(&api, Control::Groups).await {
        out.push_str("# HELP allot_group_usage Summed usage of a group's members, in the resource's internal unit.\n# TYPE allot_group_usage gauge\n");
        for (g, members) in &groups {
            let mut sums: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
            for a in all.iter().filter(|a| members.contains(&a.id)) {
                for (r, v) in &a.usage {
                    *sums.entry(r.as_str()).or_default() += v;
                }
            }
            for (r, v) in sums {
                out.push_str(&format!("allot_group_usage{{group=\"{}\",resource=\"{r}\"}} {v}\n", g.name));
            }
        }
        out.push_str("# HELP allot_group_total A group's total limit, in the resource's internal unit.\n# TYPE allot_group_total gauge\n");
        for (g, _) in &groups {
            for (r, v) in &g.totals {
                out.push_str(&format!("allot_group_total{{group=\"{}\",resource=\"{}\"}} {v}\n", g.name, r.name()));
            }
        }
    }
    if let Ok(store) = allot_store::Store::open_read_only(&api.state) {
        out.push_str(
            "# HELP allot_events_total Events published since the state database was created.\n# TYPE allot_events_total counter\n",
        );
        out.push_str(&format!("allot_events_total {}\n", store.last_seq().unwrap_or(0)));
        let mut counts: std::collections::BTreeMap<(String, String, String), u64> = std::collections::BTreeMap::new();
        for h in store.history(None).unwrap_or_default() {
            *counts.entry((h.agent, h.action, h.outcome)).or_default() += 1;
        }
        out.push_str("# HELP allot_enforcement_total Enforcement attempts by agent, action and real outcome (warn counts violations).\n# TYPE allot_enforcement_total counter\n");
        for ((a, act, o), n) in counts {
            let act = act.replace('"', "");
            out.push_str(&format!("allot_enforcement_total{{agent=\"{a}\",action=\"{act}\",outcome=\"{o}\"}} {n}\n"));
        }
    }
    if let Ok((ticks, last, total)) = ask(&api, Control::Stats).await {
        out.push_str("# HELP allot_governor_ticks_total Sampling ticks of the governor loop.\n# TYPE allot_governor_ticks_total counter\n");
        out.push_str(&format!("allot_governor_ticks_total {ticks}\n"));
        out.push_str(
            "# HELP allot_governor_tick_seconds Time the last tick spent sampling every agent.\n# TYPE allot_governor_tick_seconds gauge\n",
        );
        out.push_str(&format!("allot_governor_tick_seconds {last}\n"));
        out.push_str(
            "# HELP allot_governor_tick_seconds_total Time spent sampling since start.\n# TYPE allot_governor_tick_seconds_total counter\n",
        );
        out.push_str(&format!("allot_governor_tick_seconds_total {total}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageBody {
    resource: String,
    value: serde_json::Value,
}

/// `POST /v1/agents/{id}/usage` `{"resource": "tokens", "value": 1200}` (or a
/// quantity string such as `"1.2k"`): an agent reports its own usage of a
/// resource (the operator may report for any agent).
async fn usage(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Result<Json<UsageBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match caller(&api, peer).await {
        Caller::Operator => {}
        Caller::Agent(me) if me == id => {}
        _ => return forbidden(),
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let resource: allot_core::Resource = match b.resource.parse() {
        Ok(r) => r,
        Err(e) => return field_error("resource", e.to_string()),
    };
    let text = match &b.value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return field_error("value", "expected a number or a quantity string"),
    };
    let value = match allot_core::quantity::parse("value", resource.unit(), &text) {
        Ok(q) => q.value,
        Err(e) => return field_error("value", e.to_string()),
    };
    match ask(&api, |tx| Control::Report(id.clone(), resource, value, tx)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "rejected", e.message),
        Err(r) => r,
    }
}

/// A body that is not acceptable JSON: the rejection's own status (400 bad
/// JSON or unknown field, 413 too large, 415 not JSON, 422 wrong type).
fn body_error(e: &axum::extract::rejection::JsonRejection) -> Response {
    let status = e.status();
    let code = match status.as_u16() {
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        _ => "bad_request",
    };
    error(status, code, format!("body: {}", e.body_text()))
}

fn field_error(field: &str, message: impl Into<String>) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": "invalid", "message": message.into(), "field": field}})))
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    soft: Option<serde_json::Value>,
    hard: Option<serde_json::Value>,
    burst: Option<serde_json::Value>,
    action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    limits: std::collections::BTreeMap<String, LimitBody>,
}

/// Limits of a request body, in human units, as overrides; errors name the field.
fn overrides(
    limits: std::collections::BTreeMap<String, LimitBody>,
) -> Result<std::collections::BTreeMap<allot_core::Resource, allot_core::limits::LimitOverride>, Box<Response>> {
    let mut overrides = std::collections::BTreeMap::new();
    for (name, l) in limits {
        let field = format!("limits.{name}");
        let resource: allot_core::Resource = match name.parse() {
            Ok(r) => r,
            Err(e) => return Err(Box::new(field_error(&field, e.to_string()))),
        };
        let mut o = allot_core::limits::LimitOverride::default();
        for (key, v, slot) in [("soft", &l.soft, &mut o.soft), ("hard", &l.hard, &mut o.hard), ("burst", &l.burst, &mut o.burst)] {
            if let Some(v) = v {
                let text = match v {
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    _ => return Err(Box::new(field_error(&format!("{field}.{key}"), "expected a number or a quantity string"))),
                };
                match allot_core::quantity::parse(&format!("{field}.{key}"), resource.unit(), &text) {
                    Ok(q) => *slot = Some(q.value),
                    Err(e) => return Err(Box::new(field_error(&format!("{field}.{key}"), e.to_string()))),
                }
            }
        }
        if let Some(a) = &l.action {
            match a.parse() {
                Ok(a) => o.action = Some(a),
                Err(e) => return Err(Box::new(field_error(&format!("{field}.action"), format!("{e}")))),
            }
        }
        overrides.insert(resource, o);
    }
    Ok(overrides)
}

/// `GET /v1/agents/{id}/quota` (operator or the agent itself).
async fn quota_get(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>, Path(id): Path<String>) -> Response {
    match caller(&api, peer).await {
        Caller::Operator => {}
        Caller::Agent(me) if me == id => {}
        _ => return forbidden(),
    }
    match ask(&api, Control::List).await {
        Ok(all) => match all.into_iter().find(|a| a.id == id) {
            Some(a) => Json(a.quota).into_response(),
            None => error(StatusCode::NOT_FOUND, "not_found", format!("no agent {id:?}")),
        },
        Err(r) => r,
    }
}

/// `PATCH /v1/agents/{id}/quota` `{"limits": {"memory": {"hard": "300Mi"}}}`
/// (operator): merged over the agent's limits, in force in the kernel at once.
async fn quota_set(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Result<Json<QuotaBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let overrides = match overrides(b.limits) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match ask(&api, |tx| Control::SetLimits(id.clone(), overrides, tx)).await {
        Ok(Ok(q)) => Json(q).into_response(),
        Ok(Err(e)) if e.status == 404 => error(StatusCode::NOT_FOUND, "not_found", e.message),
        Ok(Err(e)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": "invalid", "message": e.message, "field": "limits"}})))
                .into_response()
        }
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    name: String,
    group: String,
    command: Vec<String>,
    priority: Option<i64>,
    limits: Option<std::collections::BTreeMap<String, LimitBody>>,
    env: Option<std::collections::BTreeMap<String, String>>,
    workdir: Option<PathBuf>,
}

/// An agent definition from the common fields of a start or adopt body;
/// errors name the field.
fn new_agent(
    name: String,
    group: String,
    priority: Option<i64>,
    limits: Option<std::collections::BTreeMap<String, LimitBody>>,
) -> Result<crate::fleet::AgentDef, Box<Response>> {
    let id = allot_core::AgentId::new(name).map_err(|e| Box::new(field_error("name", e.to_string())))?;
    let mut spec = allot_core::AgentSpec::new(id, group);
    if let Some(p) = priority {
        spec.priority = allot_core::Priority::new(p).map_err(|e| Box::new(field_error("priority", e.to_string())))?;
    }
    if let Some(limits) = limits {
        spec.overrides = overrides(limits)?;
    }
    Ok(crate::fleet::AgentDef {
        spec,
        command: Vec::new(),
        env: Default::default(),
        workdir: None,
        restart: crate::fleet::Restart::Never,
        notify_signal: None,
        user: None,
    })
}

/// 201 with the governor's answer, or its error.
fn created(answer: Result<Result<serde_json::Value, ControlError>, Response>) -> Response {
    match answer {
        Ok(Ok(v)) => (StatusCode::CREATED, Json(v)).into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            if e.status == 409 { "conflict" } else { "invalid" },
            e.message,
        ),
        Err(r) => r,
    }
}

/// `POST /v1/agents` (operator): start a command as an agent.
async fn start(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    if b.command.is_empty() {
        return field_error("command", "must name a program");
    }
    let def = match new_agent(b.name, b.group, b.priority, b.limits) {
        Ok(d) => crate::fleet::AgentDef { command: b.command, env: b.env.unwrap_or_default(), workdir: b.workdir, ..d },
        Err(r) => return *r,
    };
    created(ask(&api, |tx| Control::Start(Box::new(def), tx)).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptBody {
    name: String,
    group: String,
    pid: u32,
    #[serde(rename = "move", default)]
    move_it: bool,
    priority: Option<i64>,
    limits: Option<std::collections::BTreeMap<String, LimitBody>>,
}

/// `POST /v1/adopt` (operator): take over a running process as an agent;
/// `"move": true` moves it into the agent's cgroup (only when asked).
async fn adopt(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<AdoptBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let def = match new_agent(b.name, b.group, b.priority, b.limits) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    created(ask(&api, |tx| Control::Adopt(Box::new(def), b.pid, b.move_it, tx)).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    seq: u64,
    #[serde(default)]
    note: String,
}

/// `POST /v1/agents/{id}/ack` `{"seq": N, "note"?}` (the agent itself or the
/// operator): acknowledge request N of the agent channel (a scale-down, say).
/// The acknowledgement is recorded; whether a scale-down is met is still
/// decided by measured usage.
async fn ack(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match caller(&api, peer).await {
        Caller::Operator => {}
        Caller::Agent(me) if me == id => {}
        _ => return forbidden(),
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    match ask(&api, |tx| Control::Ack(id.clone(), b.seq, b.note, tx)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, "not_found", e.message),
        Err(r) => r,
    }
}

/// `DELETE /v1/agents/{id}` (operator): stop an agent (notice, grace, kill).
async fn stop(
    state: State<Shared>,
    peer: ConnectInfo<Peer>,
    Path(id): Path<String>,
    q: Result<Query<ActQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    act(state, peer, Path((id, "terminate".to_owned())), q).await
}

fn group_json(g: &allot_core::QuotaGroup, members: &[String]) -> serde_json::Value {
    let mut v = crate::commands::group_to_json(g);
    v["members"] = json!(members);
    v
}

/// `GET /v1/groups` (operator).
async fn groups(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    match ask(&api, Control::Groups).await {
        Ok(gs) => Json(gs.iter().map(|(g, m)| group_json(g, m)).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

/// A group body in the fleet file's shape, as JSON: `{"extends"?, "description"?,
/// "scaling_policy"?, "limits"?: {...}, "totals"?: {...}}`, validated by the fleet parser.
fn group_from_body(
    name: &str,
    body: &serde_json::Value,
    known: &[allot_core::QuotaGroup],
) -> Result<allot_core::QuotaGroup, Box<Response>> {
    let table = toml::Value::try_from(body).map_err(|e| Box::new(field_error("body", format!("not a group: {e}"))))?;
    let mut doc = toml::Table::new();
    let mut groups = toml::Table::new();
    groups.insert(name.to_owned(), table);
    doc.insert("groups".into(), toml::Value::Table(groups));
    // Known custom groups must exist for `extends`; pass them through the same parser.
    let _ = known;
    let text = toml::to_string(&doc).map_err(|e| Box::new(field_error("body", e.to_string())))?;
    match crate::fleet::parse(&text) {
        Ok(f) => f.groups.into_iter().next().ok_or_else(|| Box::new(field_error("body", "no group"))),
        Err(errs) => {
            let e = &errs[0];
            Err(Box::new(field_error(e.field.strip_prefix(&format!("groups.{name}.")).unwrap_or(&e.field), e.message.clone())))
        }
    }
}

/// `POST /v1/groups/{name}` creates, `PUT /v1/groups/{name}` changes (operator).
async fn put_group(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: axum::http::Method,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let known = match ask(&api, Control::Groups).await {
        Ok(gs) => gs.into_iter().map(|(g, _)| g).collect::<Vec<_>>(),
        Err(r) => return r,
    };
    let group = match group_from_body(&name, &b, &known) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let create = method == axum::http::Method::POST;
    match ask(&api, |tx| Control::PutGroup(Box::new(group.clone()), create, tx)).await {
        Ok(Ok(())) => (if create { StatusCode::CREATED } else { StatusCode::OK }, Json(group_json(&group, &[]))).into_response(),
        Ok(Err(e)) => error(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "rejected", e.message),
        Err(r) => r,
    }
}

/// `DELETE /v1/groups/{name}` (operator): only a group without members.
async fn delete_group(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>, Path(name): Path<String>) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    match ask(&api, |tx| Control::DeleteGroup(name.clone(), tx)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            if e.status == 409 { "conflict" } else { "not_found" },
            e.message,
        ),
        Err(r) => r,
    }
}

/// `GET /v1/history?agent=ID` (operator; an agent gets its own).
async fn history(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    let agent = match caller(&api, peer).await {
        Caller::Operator => q.get("agent").cloned(),
        Caller::Agent(me) => Some(me),
        Caller::Stranger => return forbidden(),
    };
    match allot_store::Store::open_read_only(&api.state).and_then(|s| s.history(agent.as_deref())) {
        Ok(h) => Json(h).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    }
}

/// `GET /v1/host` (operator): total, reserved, allocatable and available per resource.
async fn host(State(api): State<Shared>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    if !matches!(caller(&api, peer).await, Caller::Operator) {
        return forbidden();
    }
    let reading = match allot_sys::host::read_host(&allot_sys::Roots::host(), None, None) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "failed", e.to_string()),
    };
    let spec = match allot_core::host::HostSpec::new(&reading.totals, &allot_core::host::Reservations::default()) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "failed", e.to_string()),
    };
    let usage = match ask(&api, Control::TotalUsage).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let usage: std::collections::BTreeMap<allot_core::Resource, u64> =
        usage.into_iter().filter_map(|(k, v)| k.parse().ok().map(|r| (r, v))).collect();
    let available = spec.available(&usage);
    let rows: serde_json::Map<String, serde_json::Value> = spec
        .rows
        .iter()
        .map(|(r, row)| (r.name().to_owned(), json!({"total": row.total, "reserved": row.reserved, "allocatable": row.allocatable, "available": available.get(r), "unit": r.unit().name()})))
        .collect();
    Json(json!({"cgroups": reading.mode.name(), "resources": rows})).into_response()
}

/// Every route: (method, path, who may call it, summary). The OpenAPI
/// document and the tests are built from this list.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/healthz", "anyone", "Liveness"),
    ("get", "/readyz", "anyone", "Readiness: the governor answers"),
    ("get", "/v1/openapi.json", "anyone", "This document"),
    ("get", "/v1/agents", "operator; an agent sees itself", "List agents with state, pids, usage and quota"),
    ("post", "/v1/agents", "operator", "Start a command as an agent: {name, group, command, priority?, limits?, env?, workdir?}"),
    ("get", "/v1/agents/{id}", "operator; the agent itself", "One agent"),
    ("delete", "/v1/agents/{id}", "operator", "Stop an agent: notice, grace, kill"),
    ("post", "/v1/adopt", "operator", "Adopt a running process: {name, group, pid, move?, priority?, limits?}"),
    ("post", "/v1/agents/{id}/suspend", "operator", "Freeze the agent's tree"),
    ("post", "/v1/agents/{id}/resume", "operator", "Thaw it and lift throttles"),
    ("post", "/v1/agents/{id}/terminate", "operator", "Notice, grace, kill"),
    ("post", "/v1/agents/{id}/throttle", "operator", "Limit cpu: ?cpu=200m"),
    ("post", "/v1/agents/{id}/clear", "operator", "Lift throttles"),
    ("get", "/v1/agents/{id}/quota", "operator; the agent itself", "The agent's quota"),
    ("patch", "/v1/agents/{id}/quota", "operator", "Change limits at run time: {limits: {RESOURCE: {soft?, hard?, burst?, action?}}}"),
    ("post", "/v1/agents/{id}/usage", "operator; the agent itself", "Report usage: {resource, value}"),
    ("post", "/v1/agents/{id}/ack", "operator; the agent itself", "Acknowledge a request of the agent channel: {seq, note?}"),
    ("get", "/v1/events", "operator; an agent gets its own", "Server-sent events: ?since=SEQ&topic=GLOB, or Last-Event-ID"),
    ("get", "/v1/groups", "operator", "Groups with limits, totals and members"),
    ("post", "/v1/groups/{name}", "operator", "Create a group: {extends?, description?, scaling_policy?, limits?, totals?}"),
    ("put", "/v1/groups/{name}", "operator", "Replace a group"),
    ("delete", "/v1/groups/{name}", "operator", "Delete a group without members"),
    ("get", "/v1/history", "operator (?agent=ID); an agent gets its own", "Enforcement history with real outcomes"),
    ("get", "/v1/host", "operator", "Host capacity: total, reserved, allocatable, available"),
    ("get", "/metrics", "operator", "Prometheus text format"),
];

/// `GET /v1/openapi.json`.
async fn openapi() -> Response {
    let error = json!({"type": "object", "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}});
    let mut paths = serde_json::Map::new();
    for (method, path, who, summary) in ROUTES {
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let op = json!({
            "summary": summary,
            "description": format!("Who may call it: {who} (decided by the caller's peer credentials on the Unix socket)."),
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Bad request, forbidden, not found, conflict or invalid", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "5XX": {"description": "The governor failed or is unavailable", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[*method] = op;
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "allot daemon API", "version": env!("CARGO_PKG_VERSION"), "description": "HTTP JSON API of allot, a resource governor for multi-agent systems, served on a Unix socket."},
        "paths": paths,
        "components": {"schemas": {"Error": error}}
    }))
    .into_response()
}

async fn fallback() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route; see the module documentation of the API")
}

/// The router.
pub fn router(control: mpsc::UnboundedSender<Control>, state: PathBuf, owner_uid: u32) -> Router {
    let api = Arc::new(Api { control, state, owner_uid });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi))
        .route("/readyz", get(readyz))
        .route("/v1/agents", get(list).post(start))
        .route("/v1/agents/{id}", get(one).delete(stop))
        .route("/v1/agents/{id}/usage", post(usage))
        .route("/v1/agents/{id}/ack", post(ack))
        .route("/v1/agents/{id}/quota", get(quota_get).patch(quota_set))
        .route("/v1/agents/{id}/{action}", post(act))
        .route("/v1/adopt", post(adopt))
        .route("/v1/events", get(events))
        .route("/v1/groups", get(groups))
        .route("/v1/groups/{name}", post(put_group).put(put_group).delete(delete_group))
        .route("/v1/history", get(history))
        .route("/v1/host", get(host))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(api)
}

/// The router for TCP: every request needs `Authorization: Bearer <token>`;
/// with it the caller is the operator, without it 401.
pub fn tcp_router(app: Router, token: String, owner_uid: u32) -> Router {
    let token = Arc::new(token);
    app.layer(axum::middleware::from_fn(move |mut req: axum::extract::Request, next: axum::middleware::Next| {
        let token = token.clone();
        async move {
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return error(StatusCode::UNAUTHORIZED, "unauthorized", "TCP requests need Authorization: Bearer <token>");
            }
            req.extensions_mut().insert(ConnectInfo(Peer { uid: Some(owner_uid), pid: None }));
            next.run(req).await
        }
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serve the router on `listener` with peer credentials until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).with_graceful_shutdown(shutdown).await
}
