//! The reference design's read operations: an agent's quota compliance
//! (asked of the governor loop: usage, limits, status, pending escalation,
//! holders), and, from the state database, the on-demand analysis of an
//! agent's samples, recommendations and reports (the same functions as
//! `allot analyze --agent`, `allot recommend` and `allot report`). Store
//! reads and rendering run on a blocking thread with their own read-only
//! store, never on the governor's loop nor the async workers. Analyses and
//! reports are heavy reads: [`super::HEAVY_READS`] run at once over every
//! caller (one more is answered 429 with `Retry-After`), and each reads a
//! bounded number of rows (`commands::analyze::ANALYSIS_MAX_SAMPLES`,
//! `commands::report::{REPORT_MAX_SAMPLES, REPORT_MAX_MINUTES}`).

use super::access::Caller;
use super::error::ApiError;
use super::{Shared, answer, ask};
use crate::commands::report::{self, ReadError};
use crate::governor::control::Control;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoAgent(a) => ApiError::no_agent(&a),
            ReadError::Invalid { field, message } => ApiError::field(field, message),
            ReadError::NoData(m) => ApiError::new(StatusCode::NOT_FOUND, "no_data", m),
            ReadError::Store(m) => ApiError::unavailable(m),
        }
    }
}

/// Run `work` on a blocking thread with a read-only store of the state.
pub(super) async fn with_store<T: Send + 'static>(
    api: &Shared,
    work: impl FnOnce(&allot_store::Store) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ApiError> {
    run_blocking(api, None, work).await
}

/// The same for a heavy read (analysis, report): only with one of the
/// [`super::HEAVY_READS`] permits, else 429 with `Retry-After: 1`. A caller
/// other than the operator also needs one of the fewer shared permits, so
/// agents reading as fast as they can never take the operator's last one.
/// The permits go with the work, so a read whose caller hung up still counts
/// until it ends.
pub(super) async fn heavy_read<T: Send + 'static>(
    api: &Shared,
    caller: &Caller,
    work: impl FnOnce(&allot_store::Store) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ApiError> {
    let busy = || {
        ApiError::busy(
            format!(
                "too many analyses and reports at once: the daemon serves {} at a time for every caller ({} for agents); try again in a second",
                super::HEAVY_READS,
                super::HEAVY_READS - 1
            ),
            1,
        )
    };
    let shared = match caller {
        Caller::Operator => None,
        _ => Some(Arc::clone(&api.heavy_shared).try_acquire_owned().map_err(|_| busy())?),
    };
    let permit = Arc::clone(&api.heavy).try_acquire_owned().map_err(|_| busy())?;
    run_blocking(api, Some((permit, shared)), work).await
}

async fn run_blocking<T: Send + 'static>(
    api: &Shared,
    permit: Option<(tokio::sync::OwnedSemaphorePermit, Option<tokio::sync::OwnedSemaphorePermit>)>,
    work: impl FnOnce(&allot_store::Store) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = api.state.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let store = allot_store::Store::open_read_only(&state).map_err(|e| ReadError::Store(e.to_string()))?;
        work(&store)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the read did not finish: {e}")))?
    .map_err(ApiError::from)
}

/// `GET /v1/agents/{id}/compliance`: per resource usage, soft, hard, burst,
/// status (`ok`, `soft`, `burst`, `hard`) and the pending escalation with
/// when it falls due; who holds the agent throttled or suspended.
pub(super) async fn compliance(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(answer(ask(&api, |tx| Control::Compliance(id.clone(), tx)).await)?))
}

/// The query of `GET /v1/agents/{id}/analysis`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AnalysisQuery {
    /// The resource analysed (default memory).
    resource: Option<String>,
    /// The samples analysed: those of this long ago until now (default 1h).
    window: Option<String>,
    /// How far ahead the forecast looks (default 10m).
    horizon: Option<String>,
}

/// `GET /v1/agents/{id}/analysis?resource=memory&window=1h&horizon=10m`:
/// pattern, forecast and recommendation of the agent's recorded samples.
pub(super) async fn analysis(
    State(api): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<AnalysisQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::query(&e, "resource (such as memory), window (such as 1h) and horizon (such as 10m)"))?;
    let resource = q.resource.unwrap_or_else(|| "memory".into());
    let window = q.window.unwrap_or_else(|| "1h".into());
    let horizon = q.horizon.unwrap_or_else(|| "10m".into());
    let min_window = api.sample_interval;
    let v = heavy_read(&api, &caller, move |s| {
        crate::commands::analyze::agent_analysis(s, &id, &resource, &window, &horizon, min_window, report::now_ms())
    })
    .await?;
    Ok(Json(v))
}

/// `GET /v1/agents/{id}/recommendations`: the agent's latest recommendation per resource.
pub(super) async fn agent_recommendations(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Vec<Value>>, ApiError> {
    let v = with_store(&api, move |s| {
        if s.agent(&id)?.is_none() {
            return Err(ReadError::NoAgent(id));
        }
        report::recommendations(s, Some(&id))
    })
    .await?;
    Ok(Json(v))
}

/// `GET /v1/recommendations`: every agent's (an agent gets its own).
pub(super) async fn recommendations(State(api): State<Shared>, caller: Caller) -> Result<Json<Vec<Value>>, ApiError> {
    let only = own(caller);
    Ok(Json(with_store(&api, move |s| report::recommendations(s, only.as_deref())).await?))
}

/// The query of the report routes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    /// The start: an RFC 3339 time (2026-12-03T10:00:00Z) or a duration ago (2h); default 1h.
    since: Option<String>,
    /// The end, in the same forms; default now.
    until: Option<String>,
    /// json (the default), text, svg or html.
    format: Option<String>,
}

/// `GET /v1/agents/{id}/report?since=&until=&format=`.
pub(super) async fn agent_report(
    State(api): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    render(&api, &caller, Some(id), q).await
}

/// `GET /v1/report?since=&until=&format=`: every agent (an agent gets its own).
pub(super) async fn fleet_report(
    State(api): State<Shared>,
    caller: Caller,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let only = own(caller.clone());
    render(&api, &caller, only, q).await
}

/// An agent caller's own id (it sees only its own); `None` for the operator.
fn own(caller: Caller) -> Option<String> {
    match caller {
        Caller::Agent(me) => Some(me),
        _ => None,
    }
}

/// A report over `since` (a time or a duration ago, default 1h) to `until`
/// (default now) as json (the default), text, svg or html.
async fn render(
    api: &Shared,
    caller: &Caller,
    agent: Option<String>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::query(
            &e,
            "since and until (RFC 3339 times such as 2026-12-03T10:00:00Z, or durations ago such as 2h) and format (json, text, svg, html)",
        )
    })?;
    let r = heavy_read(api, caller, move |s| {
        let range =
            report::range(("since", q.since.as_deref().unwrap_or("1h")), q.until.as_deref().map(|u| ("until", u)), report::now_ms())?;
        report::render(s, agent.as_deref(), range, q.format.as_deref().unwrap_or("json"), "format")
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, r.content_type)], r.body).into_response())
}
