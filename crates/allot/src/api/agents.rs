//! Agent routes: list, read, start, adopt, stop, operator actions, quota,
//! usage reports and acknowledgements. Access is checked by the route
//! table's rule before any of these run.

use super::access::{Caller, Peer};
use super::bodies::{self, AckBody, AdoptBody, QuotaBody, StartBody, UsageBody};
use super::error::ApiError;
use super::{Shared, answer, ask};
use crate::governor::control::{AgentStatus, Control, OperatorAction};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

type Body<T> = Result<Json<T>, JsonRejection>;

/// `GET /v1/agents`: every agent for the operator, itself for an agent.
pub(super) async fn list(State(api): State<Shared>, caller: Caller) -> Result<Json<Vec<AgentStatus>>, ApiError> {
    let all = ask(&api, Control::List).await?;
    Ok(Json(match caller {
        Caller::Agent(me) => all.into_iter().filter(|a| a.id == me).collect(),
        _ => all,
    }))
}

async fn status(api: &Shared, id: &str) -> Result<AgentStatus, ApiError> {
    ask(api, |tx| Control::Agent(id.to_owned(), tx)).await?.ok_or_else(|| ApiError::no_agent(id))
}

/// `GET /v1/agents/{id}`.
pub(super) async fn one(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<AgentStatus>, ApiError> {
    Ok(Json(status(&api, &id).await?))
}

/// `GET /v1/agents/{id}/quota`.
/// Built from the agent's quota alone (not its whole status).
pub(super) async fn quota_get(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    ask(&api, |tx| Control::Quota(id.clone(), tx)).await?.map(Json).ok_or_else(|| ApiError::no_agent(&id))
}

/// The query of `POST /v1/agents/{id}/throttle`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ThrottleQuery {
    /// The cpu limit, such as 200m or 1.5 (cores); needed.
    pub(super) cpu: Option<String>,
}

/// The query of `POST /v1/agents/{id}/resume`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeQuery {
    /// true: also lift every other holder's freeze and throttle and the policy's pending escalations.
    pub(super) force: Option<bool>,
}

async fn act(api: &Shared, id: String, action: OperatorAction) -> Result<Json<Value>, ApiError> {
    let detail = answer(ask(api, |tx| Control::Act(id.clone(), action, tx)).await)?;
    Ok(Json(json!({"agent": id, "action": action.name(), "outcome": "success", "detail": detail})))
}

/// `POST /v1/agents/{id}/suspend`: the operator's freeze.
pub(super) async fn suspend(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&api, id, OperatorAction::Suspend).await
}

/// `POST /v1/agents/{id}/resume[?force=true]`: lift the operator's holds (with force, every holder's).
pub(super) async fn resume(
    State(api): State<Shared>,
    Path(id): Path<String>,
    q: Result<Query<ResumeQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "force (?force=true)"))?;
    let force = q.force.unwrap_or(false);
    act(&api, id, OperatorAction::Resume { force }).await
}

/// `POST /v1/agents/{id}/terminate` and `DELETE /v1/agents/{id}`: notice, grace, kill.
pub(super) async fn terminate(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&api, id, OperatorAction::Terminate).await
}

/// `POST /v1/agents/{id}/throttle?cpu=200m`: the operator's cpu limit.
pub(super) async fn throttle(
    State(api): State<Shared>,
    Path(id): Path<String>,
    q: Result<Query<ThrottleQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "cpu (such as ?cpu=200m)"))?;
    let Some(cpu) = q.cpu else { return Err(ApiError::field("cpu", "throttle needs ?cpu=QUANTITY, such as 200m")) };
    let m = bodies::quantity("cpu", allot_core::Unit::Millicores, &Value::String(cpu))?;
    if m == 0 {
        return Err(ApiError::field("cpu", "must be above 0"));
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    if m > cores * 1000 {
        return Err(ApiError::field("cpu", format!("{m}m is more than this host's {cores} cores ({}m)", cores * 1000)));
    }
    act(&api, id, OperatorAction::Throttle(m)).await
}

/// `POST /v1/agents/{id}/clear`: lift the operator's throttle.
pub(super) async fn clear(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    act(&api, id, OperatorAction::Clear).await
}

/// `POST /v1/agents/{id}/usage` `{"resource": "tokens", "value": 1200}` (or a
/// quantity string such as `"1.2k"`, or with its window, `"400/h"`: converted
/// to the window of the agent's limit): usage an agent reports itself.
pub(super) async fn usage(State(api): State<Shared>, Path(id): Path<String>, body: Body<UsageBody>) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let resource: allot_core::Resource =
        b.resource.parse().map_err(|e: allot_core::resource::ResourceNameError| ApiError::field("resource", e.to_string()))?;
    if !resource.is_custom() {
        return Err(ApiError::field(
            "resource",
            format!("{resource} is measured by allot; only custom resources (tokens, usd_micros, ...) can be reported"),
        ));
    }
    let (value, window) = bodies::count("value", resource.unit(), &b.value)?;
    Ok(Json(answer(ask(&api, |tx| Control::Report(id.clone(), resource, value, window, tx)).await)?))
}

/// `POST /v1/agents/{id}/ack` `{"seq": N, "note"?}`: acknowledge request N of
/// the agent channel (a scale-down, say). Whether a scale-down is met is
/// still decided by measured usage.
pub(super) async fn ack(State(api): State<Shared>, Path(id): Path<String>, body: Body<AckBody>) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    Ok(Json(answer(ask(&api, |tx| Control::Ack(id.clone(), b.seq, b.note, tx)).await)?))
}

/// `PATCH /v1/agents/{id}/quota` `{"limits": {"memory": {"hard": "300Mi"}}}`:
/// merged over the agent's limits, in force in the kernel at once.
pub(super) async fn quota_set(State(api): State<Shared>, Path(id): Path<String>, body: Body<QuotaBody>) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let overrides = bodies::overrides(b.limits)?;
    Ok(Json(answer(ask(&api, |tx| Control::SetLimits(id.clone(), overrides, tx)).await)?))
}

/// `POST /v1/agents`: start a command as an agent, as `user` when given, else
/// as the caller's own user (`nobody` for a root caller: root only by name).
pub(super) async fn start(
    State(api): State<Shared>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    body: Body<StartBody>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    if b.command.is_empty() {
        return Err(ApiError::field("command", "must name a program"));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = match &b.user {
        Some(u) => crate::fleet::resolve_user(u, &passwd).map_err(|e| ApiError::field("user", e))?,
        None => crate::fleet::default_user(peer.map_or(api.owner_uid, |p| p.0.0.uid_or(api.owner_uid)), &passwd),
    };
    let def = bodies::new_agent(b.name, b.group, b.priority, b.limits, b.pools)?;
    let def = crate::fleet::AgentDef { command: b.command, env: b.env.unwrap_or_default(), workdir: b.workdir, user: Some(user), ..def };
    let v = answer(ask(&api, |tx| Control::Start(Box::new(def), tx)).await)?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /v1/adopt`: take over a running process as an agent; `"move": true`
/// moves it into the agent's cgroup (only when asked).
pub(super) async fn adopt(State(api): State<Shared>, body: Body<AdoptBody>) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let def = bodies::new_agent(b.name, b.group, b.priority, b.limits, b.pools)?;
    let v = answer(ask(&api, |tx| Control::Adopt(Box::new(def), b.pid, b.move_it, tx)).await)?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}
