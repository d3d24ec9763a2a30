//! Groups, events (server-sent, resumable), history, host capacity,
//! health, readiness, metrics and the OpenAPI document.

use super::access::Caller;
use super::error::ApiError;
use super::{Shared, answer, ask, bodies};
use crate::governor::control::Control;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the governor answers and its store can record (503 with the reason when not).
pub(super) async fn readyz(State(api): State<Shared>) -> Result<&'static str, ApiError> {
    ask(&api, Control::Ready).await?.map_err(|why| ApiError::unavailable(&why))?;
    Ok("ready\n")
}

/// `GET /metrics`: the registry the governor keeps up to date.
pub(super) async fn metrics(State(api): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], api.metrics.encode()).into_response()
}

fn group_json(g: &allot_core::QuotaGroup, members: &[String]) -> Value {
    let mut v = crate::commands::group_to_json(g);
    v["members"] = json!(members);
    v
}

/// `GET /v1/groups`.
pub(super) async fn groups(State(api): State<Shared>) -> Result<Json<Vec<Value>>, ApiError> {
    Ok(Json(ask(&api, Control::Groups).await?.iter().map(|(g, m)| group_json(g, m)).collect()))
}

/// `POST /v1/groups/{name}` creates, `PUT /v1/groups/{name}` changes: stored
/// (kept across restarts), and in force in the kernel at once (the group's
/// totals and its members' backstops), answered with what was written.
pub(super) async fn put_group(
    State(api): State<Shared>,
    method: Method,
    Path(name): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let group = bodies::group(&name, &b)?;
    let create = method == Method::POST;
    let kernel = answer(ask(&api, |tx| Control::PutGroup(Box::new(group.clone()), create, tx)).await)?;
    let mut v = group_json(&group, &[]);
    v.as_object_mut().map(|o| o.remove("members"));
    // What was written to the kernel (the group's totals, its members' cpu limits); null without live members.
    v["kernel"] = kernel;
    Ok((if create { StatusCode::CREATED } else { StatusCode::OK }, Json(v)).into_response())
}

/// `DELETE /v1/groups/{name}`: only a group without members.
pub(super) async fn delete_group(State(api): State<Shared>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    answer(ask(&api, |tx| Control::DeleteGroup(name.clone(), tx)).await)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `GET /v1/history`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only this agent's (an agent caller always gets its own).
    agent: Option<String>,
}

/// `GET /v1/history?agent=ID`: an agent gets its own (asking for another's is 403, as every other per-agent read).
pub(super) async fn history(
    State(api): State<Shared>,
    caller: Caller,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Vec<allot_store::EnforcementRecord>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "agent (an agent's id)"))?;
    let agent = match caller {
        Caller::Agent(me) if q.agent.as_ref().is_some_and(|a| *a != me) => return Err(ApiError::forbidden()),
        Caller::Agent(me) => Some(me),
        _ => q.agent,
    };
    allot_store::Store::open_read_only(&api.state)
        .and_then(|s| s.history(agent.as_deref()))
        .map(Json)
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

/// `GET /v1/host`: total, reserved, allocatable and available per resource.
pub(super) async fn host(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    let failed = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", e);
    let reading = allot_sys::host::read_host(&allot_sys::Roots::host(), None, None).map_err(|e| failed(e.to_string()))?;
    let spec =
        allot_core::host::HostSpec::new(&reading.totals, &allot_core::host::Reservations::default()).map_err(|e| failed(e.to_string()))?;
    let usage: BTreeMap<allot_core::Resource, u64> =
        ask(&api, Control::TotalUsage).await?.into_iter().filter_map(|(k, v)| k.parse().ok().map(|r| (r, v))).collect();
    let available = spec.available(&usage);
    let rows: serde_json::Map<String, Value> = spec
        .rows
        .iter()
        .map(|(r, row)| (r.name().to_owned(), json!({"total": row.total, "reserved": row.reserved, "allocatable": row.allocatable, "available": available.get(r), "unit": r.unit().name()})))
        .collect();
    Ok(Json(json!({"cgroups": reading.mode.name(), "resources": rows})))
}

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Only events after this sequence number (a Last-Event-ID header wins over it).
    since: Option<u64>,
    /// Only topics matching this glob (agent.*).
    topic: Option<String>,
    /// `false`: the events recorded so far as one JSON array, instead of a stream.
    follow: Option<bool>,
}

/// The most events one `follow=false` answer holds; the next page starts after its last.
pub const EVENTS_PAGE: usize = 1000;

/// The events after `since` recorded so far, matching `topic` and (for an agent) its own:
/// at most [`EVENTS_PAGE`], read on a blocking thread.
async fn events_so_far(api: &Shared, since: u64, topic: Option<String>, only: Option<String>) -> Result<Response, ApiError> {
    let store = api.events_store()?;
    let page = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, String> {
        let s = store.lock().map_err(|_| "the event store is unusable".to_owned())?;
        let mut out = Vec::new();
        let mut after = since;
        loop {
            let batch = s.events_since(after, 1000).map_err(|e| e.to_string())?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in batch {
                if only.as_deref().is_some_and(|me| e.agent.as_deref() != Some(me))
                    || topic.as_deref().is_some_and(|g| !allot_core::events::topic_matches(g, &e.topic))
                {
                    continue;
                }
                let at = crate::governor::clock::rfc3339(allot_core::Time::from_millis(e.at_ms));
                out.push(json!({"seq": e.seq, "at_ms": e.at_ms, "at": at, "topic": e.topic, "agent": e.agent, "data": e.data}));
                if out.len() == EVENTS_PAGE {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the read did not finish: {e}")))?
    .map_err(ApiError::unavailable)?;
    Ok(Json(page).into_response())
}

/// How often an event stream reads the store though no event was announced.
const STREAM_RECHECK: Duration = Duration::from_secs(5);

/// `GET /v1/events?since=SEQ&topic=GLOB` (or `Last-Event-ID`): server-sent
/// events read from the store, so a stream resumes from any sequence number,
/// also across restarts; with `follow=false`, the events recorded so far as
/// a JSON array (at most [`EVENTS_PAGE`]: ask again after the last). An agent gets its own.
pub(super) async fn events(
    State(api): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "since (a sequence number), topic (a glob) and follow (false: no stream)"))?;
    let (since, only) = stream_start(caller, &headers, q.since);
    if q.follow == Some(false) {
        return events_so_far(&api, since, q.topic, only).await;
    }
    event_stream(api, since, q.topic, only, true, None)
}

/// Where an event stream starts (`Last-Event-ID`, a reconnecting browser's,
/// wins over `since`) and whose events it carries (an agent: only its own).
pub(super) fn stream_start(caller: Caller, headers: &HeaderMap, since: Option<u64>) -> (u64, Option<String>) {
    let only = match caller {
        Caller::Agent(me) => Some(me),
        _ => None,
    };
    let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    (last_id.or(since).unwrap_or(0), only)
}

/// Whether a stream may go on (a dashboard stream ends with its session).
pub(super) type Alive = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The events after `since` (of `only`'s agent, on topics matching `topic`)
/// as server-sent events, each with its sequence number as id; `named`: each
/// event named by its topic (else unnamed, for a browser's `onmessage`).
pub(super) fn event_stream(
    api: Shared,
    mut since: u64,
    topic: Option<String>,
    only: Option<String>,
    named: bool,
    alive: Option<Alive>,
) -> Result<Response, ApiError> {
    let slot = api.subscribers.take(only.clone()).map_err(|r| {
        api.metrics.subscriber_refused();
        let cap = api.subscribers.cap();
        ApiError::unavailable(format!(
            "too many event subscribers ({}): at most {} at once, {} of them kept for the operator, {} per agent",
            r.reason(),
            cap.total,
            cap.reserved,
            cap.per_holder
        ))
    })?;
    let store = api.events_store()?;
    let mut stored = api.metrics.stored_events();
    let (tx, mut rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(256);
    // The task and its slot end when the stream is dropped (the
    // peer went away, or the connection ended): it waits on the channel's
    // closing, not only on a send that may never come when nothing happens.
    // It reads the store when the governor says it stored an event (and
    // every few seconds in any case), so a stream resumes from any sequence
    // number and sees each event within a wake-up of its record.
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            stored.borrow_and_update();
            if alive.as_ref().is_some_and(|a| !a()) {
                return;
            }
            let batch = store.lock().map_or_else(|_| Vec::new(), |s| s.events_since(since, 1000).unwrap_or_default());
            for e in batch {
                since = e.seq;
                if only.as_deref().is_some_and(|me| e.agent.as_deref() != Some(me))
                    || topic.as_deref().is_some_and(|g| !allot_core::events::topic_matches(g, &e.topic))
                {
                    continue;
                }
                let data = json!({"seq": e.seq, "at_ms": e.at_ms, "topic": e.topic, "agent": e.agent, "data": e.data});
                let event = Event::default().id(e.seq.to_string());
                let event = if named { event.event(e.topic.clone()) } else { event };
                if tx.send(Ok(event.data(data.to_string()))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tx.closed() => return,
                changed = stored.changed() => {
                    if changed.is_err() {
                        // The governor is gone: no event will come; look now and then until the stream ends.
                        tokio::time::sleep(STREAM_RECHECK).await;
                    }
                }
                () = tokio::time::sleep(STREAM_RECHECK) => {}
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// `GET /v1/openapi.json`, built from the route table.
pub(super) async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}
