//! Budget routes: reserve, settle, release, and the budgets with their open
//! reservations. An agent reserves for itself and settles or releases only
//! its own reservations (another's answers 404, as if it did not exist).

use super::access::Caller;
use super::error::ApiError;
use super::openapi::Quantity;
use super::{Shared, answer, ask};
use crate::governor::budgets::BudgetQuery;
use crate::governor::control::Control;
use allot_core::Resource;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

type Body<T> = Result<Json<T>, JsonRejection>;

/// How long a reservation is held when the body gives no `ttl`.
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// `POST /v1/agents/{id}/reservations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReserveBody {
    /// Amounts by custom resource: numbers or quantity strings (`"4k"`).
    #[schemars(with = "BTreeMap<String, Quantity>")]
    resources: BTreeMap<String, Value>,
    /// How long it is held unsettled (`"60s"`, default 60 s).
    ttl: Option<String>,
}

/// `POST /v1/reservations/{rid}/settle`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SettleBody {
    /// Actual amounts by resource; a reserved resource left out is charged as reserved.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Quantity>")]
    resources: BTreeMap<String, Value>,
}

/// Amounts of custom resources, each a plain count (no window).
fn amounts(body: BTreeMap<String, Value>) -> Result<BTreeMap<Resource, u64>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, v) in body {
        let field = format!("resources.{name}");
        let r: Resource = name.parse().map_err(|e: allot_core::resource::ResourceNameError| ApiError::field(&field, e.to_string()))?;
        if !r.is_custom() {
            return Err(ApiError::field(
                &field,
                format!("{r} is measured by allot; budgets are on custom resources (tokens, usd_micros, ...)"),
            ));
        }
        let (value, window) = super::bodies::count(&field, r.unit(), &v)?;
        if window.is_some() {
            return Err(ApiError::field(&field, "an amount, not a rate: give a count such as 4000 or \"4k\""));
        }
        out.insert(r, value);
    }
    Ok(out)
}

fn rid(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no open reservation {text:?} (ids are numbers)")))
}

fn caller_agent(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Agent(a) => Some(a.clone()),
        _ => None,
    }
}

/// `POST /v1/agents/{id}/reservations` `{"resources": {"tokens": 4000}, "ttl": "60s"}`:
/// 201 with the reservation, or 429 naming the level and resource that
/// refused, with `retry_after`.
pub(super) async fn reserve(State(api): State<Shared>, Path(id): Path<String>, body: Body<ReserveBody>) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let ttl = match &b.ttl {
        Some(t) => allot_core::quantity::parse_duration("ttl", t).map_err(|e| ApiError::field("ttl", e.to_string()))?,
        None => DEFAULT_TTL,
    };
    if ttl.is_zero() {
        // (parse_duration refuses more than 365d already)
        return Err(ApiError::field("ttl", "ttl 0s: use more than 0 and at most 365d (such as \"60s\")"));
    }
    let amounts = amounts(b.resources)?;
    if amounts.is_empty() {
        return Err(ApiError::field("resources", "name at least one custom resource and its amount"));
    }
    let v = answer(ask(&api, |tx| Control::Reserve(id.clone(), amounts, ttl, tx)).await)?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /v1/reservations/{rid}/settle` `{"resources": {"tokens": 3100}}`.
pub(super) async fn settle(
    State(api): State<Shared>,
    caller: Caller,
    Path(r): Path<String>,
    body: Body<SettleBody>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    let rid = rid(&r)?;
    let actual = amounts(b.resources)?;
    Ok(Json(answer(ask(&api, |tx| Control::Settle(rid, caller_agent(&caller), actual, tx)).await)?))
}

/// `DELETE /v1/reservations/{rid}`: everything held is returned.
pub(super) async fn release(State(api): State<Shared>, caller: Caller, Path(r): Path<String>) -> Result<Json<Value>, ApiError> {
    let rid = rid(&r)?;
    Ok(Json(answer(ask(&api, |tx| Control::Release(rid, caller_agent(&caller), tx)).await)?))
}

/// `GET /v1/budgets`: every budget for the operator; an agent gets those that apply to it.
pub(super) async fn list(State(api): State<Shared>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let q = match caller {
        Caller::Agent(me) => BudgetQuery::Agent(me),
        _ => BudgetQuery::All,
    };
    Ok(Json(answer(ask(&api, |tx| Control::Budgets(q, tx)).await)?))
}

/// `GET /v1/agents/{id}/budgets`: the budgets that apply to the agent (its own, its group's, its pools').
pub(super) async fn agent(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(answer(ask(&api, |tx| Control::Budgets(BudgetQuery::Agent(id), tx)).await)?))
}

/// `GET /v1/pools/{name}`: one pool's budgets.
pub(super) async fn pool(State(api): State<Shared>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(answer(ask(&api, |tx| Control::Budgets(BudgetQuery::Pool(name), tx)).await)?))
}

/// `PUT /v1/pools/{name}` `{"usd_micros": {"hard": "50M", "calendar": "month"}, "tokens": "5M/day"}`:
/// the pool's budgets, replaced whole.
pub(super) async fn put_pool(State(api): State<Shared>, Path(name): Path<String>, body: Body<Value>) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::body(&e))?;
    if !b.is_object() {
        return Err(ApiError::field("body", "a pool is an object of budgets by custom resource"));
    }
    let budgets = super::bodies::pool(&name, &b)?;
    Ok(Json(answer(ask(&api, |tx| Control::PutPool(name, budgets, tx)).await)?))
}

/// `DELETE /v1/pools/{name}`.
pub(super) async fn delete_pool(State(api): State<Shared>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(answer(ask(&api, |tx| Control::DeletePool(name, tx)).await)?))
}
