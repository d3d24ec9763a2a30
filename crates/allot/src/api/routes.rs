//! The route table: one list of every route with its method, path, access
//! rule, the body and query types its handler deserializes, its success
//! status, its 429 if it can answer one, and a summary. It builds the router
//! (each route behind its access rule), the OpenAPI document, and the
//! authorization test matrix, so a route cannot be added without a rule nor
//! without saying what it takes.

use super::access::Access;
use super::agents::{ResumeQuery, ThrottleQuery};
use super::bodies::{AckBody, AdoptBody, GroupBody, PoolBody, QuotaBody, StartBody, UsageBody};
use super::budgets::{ReserveBody, SettleBody};
use super::openapi::{SchemaFn, body, query};
use super::reads::{AnalysisQuery, ReportQuery};
use super::system::{EventsQuery, HistoryQuery};
use super::{Shared, agents, budgets, reads, system};
use axum::routing::{MethodFilter, MethodRouter, on};

/// An HTTP method of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// Lower-case name, as in OpenAPI.
    pub fn name(self) -> &'static str {
        match self {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
            HttpMethod::Put => "put",
            HttpMethod::Patch => "patch",
            HttpMethod::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            HttpMethod::Get => MethodFilter::GET,
            HttpMethod::Post => MethodFilter::POST,
            HttpMethod::Put => MethodFilter::PUT,
            HttpMethod::Patch => MethodFilter::PATCH,
            HttpMethod::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Its method.
    pub method: HttpMethod,
    /// Its path, with `{id}` or `{name}` parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does.
    pub summary: &'static str,
    /// The schema of the JSON body its handler reads, if it reads one.
    pub body: Option<SchemaFn>,
    /// The schema of the query parameters its handler reads, if any.
    pub query: Option<SchemaFn>,
    /// Its status on success.
    pub ok: u16,
    /// Why it may answer 429, if it may.
    pub too_many: Option<&'static str>,
    handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

impl Route {
    /// The handler for this route's method.
    pub(super) fn method_router(&self) -> MethodRouter<Shared> {
        (self.handler)(self.method.filter())
    }
}

/// Table rows: `(METHOD, "path", Access, handler, Body, Query, status, TooMany, "summary")`,
/// where `Body` and `Query` are the types the handler deserializes and
/// `TooMany` why it may answer 429, each `_` for none.
macro_rules! routes {
    ($(($method:ident, $path:literal, $access:ident, $handler:path, $body:tt, $query:tt, $ok:literal, $many:tt, $summary:literal)),* $(,)?) => {
        &[$(Route {
            method: HttpMethod::$method,
            path: $path,
            access: Access::$access,
            summary: $summary,
            body: column!($body, body),
            query: column!($query, query),
            ok: $ok,
            too_many: column!($many),
            handler: |f| on(f, $handler),
        }),*]
    };
}

/// An optional column: `_`, or a type (with the function making its schema) or a constant.
macro_rules! column {
    (_ $(, $f:ident)?) => {
        None
    };
    ($t:ident, $f:ident) => {
        Some($f::<$t> as SchemaFn)
    };
    ($c:ident) => {
        Some($c)
    };
}

/// The 429 of a reservation.
const REFUSED: &str = "A budget refused (error.code exhausted: error.level and error.resource name it) or the policy throttles the \
    agent's reservations (throttled); error.retry_after and Retry-After say when to try again";
/// The 429 of a heavy read.
const BUSY: &str = "Too many analyses and reports at once (error.code busy); Retry-After says when to try again";

/// Every route of the API.
#[rustfmt::skip]
pub const ROUTES: &[Route] = routes![
    (Get, "/healthz", Anyone, system::healthz, _, _, 200, _, "Liveness"),
    (Get, "/readyz", Anyone, system::readyz, _, _, 200, _, "Readiness: the governor answers"),
    (Get, "/v1/openapi.json", Anyone, system::openapi, _, _, 200, _, "This document"),
    (Get, "/v1/agents", Scoped, agents::list, _, _, 200, _, "List agents with state, holders, pids, usage and quota"),
    (Post, "/v1/agents", Operator, agents::start, StartBody, _, 201, _, "Start a command as an agent"),
    (Get, "/v1/agents/{id}", SelfOrOperator, agents::one, _, _, 200, _, "One agent"),
    (Delete, "/v1/agents/{id}", Operator, agents::terminate, _, _, 200, _, "Stop an agent: notice, grace, kill"),
    (Post, "/v1/adopt", Operator, agents::adopt, AdoptBody, _, 201, _, "Adopt a running process"),
    (Post, "/v1/agents/{id}/suspend", Operator, agents::suspend, _, _, 200, _, "Freeze the agent's tree (the operator's hold)"),
    (Post, "/v1/agents/{id}/resume", Operator, agents::resume, _, ResumeQuery, 200, _,
        "Lift the operator's freeze and throttle; ?force=true lifts every holder's and the policy's pending escalations"),
    (Post, "/v1/agents/{id}/terminate", Operator, agents::terminate, _, _, 200, _, "Notice, grace, kill"),
    (Post, "/v1/agents/{id}/throttle", Operator, agents::throttle, _, ThrottleQuery, 200, _, "Limit cpu (the operator's hold): ?cpu=200m"),
    (Post, "/v1/agents/{id}/clear", Operator, agents::clear, _, _, 200, _, "Lift the operator's throttle"),
    (Get, "/v1/agents/{id}/quota", SelfOrOperator, agents::quota_get, _, _, 200, _, "The agent's quota"),
    (Patch, "/v1/agents/{id}/quota", Operator, agents::quota_set, QuotaBody, _, 200, _, "Change limits at run time"),
    (Post, "/v1/agents/{id}/usage", SelfOrOperator, agents::usage, UsageBody, _, 200, _, "Report usage of a custom resource"),
    (Post, "/v1/agents/{id}/reservations", SelfOrOperator, budgets::reserve, ReserveBody, _, 201, REFUSED,
        "Reserve custom resources at every budget that applies (agent, group, pools), all or nothing"),
    (Get, "/v1/agents/{id}/budgets", SelfOrOperator, budgets::agent, _, _, 200, _, "The budgets that apply to the agent and its open reservations"),
    (Post, "/v1/reservations/{rid}/settle", Scoped, budgets::settle, SettleBody, _, 200, _,
        "Settle a reservation with the actual amounts (unused part returned, overrun charged); an agent settles only its own"),
    (Delete, "/v1/reservations/{rid}", Scoped, budgets::release, _, _, 200, _,
        "Release a reservation: everything it holds is returned; an agent releases only its own"),
    (Get, "/v1/budgets", Scoped, budgets::list, _, _, 200, _,
        "Every budget (window, limit, spent, reserved, remaining, reset) and open reservation; an agent gets those that apply to it"),
    (Get, "/v1/pools/{name}", Operator, budgets::pool, _, _, 200, _, "One pool's budgets and the reservations held there"),
    (Put, "/v1/pools/{name}", Operator, budgets::put_pool, PoolBody, _, 200, _, "Declare or replace a pool's budgets"),
    (Delete, "/v1/pools/{name}", Operator, budgets::delete_pool, _, _, 200, _,
        "Delete a pool declared through the API (refused while an agent draws on it)"),
    (Post, "/v1/agents/{id}/ack", SelfOrOperator, agents::ack, AckBody, _, 200, _, "Acknowledge a request of the agent channel"),
    (Get, "/v1/agents/{id}/compliance", SelfOrOperator, reads::compliance, _, _, 200, _,
        "Quota compliance: per resource usage, soft, hard, burst, status (ok, soft, burst, hard), pending escalation and when it falls due; who holds the agent throttled or suspended"),
    (Get, "/v1/agents/{id}/analysis", SelfOrOperator, reads::analysis, _, AnalysisQuery, 200, BUSY,
        "Pattern, forecast and recommendation of the agent's recorded samples"),
    (Get, "/v1/agents/{id}/recommendations", SelfOrOperator, reads::agent_recommendations, _, _, 200, _,
        "The agent's latest recommendation per resource"),
    (Get, "/v1/agents/{id}/report", SelfOrOperator, reads::agent_report, _, ReportQuery, 200, BUSY, "The agent's report"),
    (Get, "/v1/recommendations", Scoped, reads::recommendations, _, _, 200, _, "The latest recommendation per agent and resource"),
    (Get, "/v1/report", Scoped, reads::fleet_report, _, ReportQuery, 200, BUSY, "Every agent's report"),
    (Get, "/v1/events", Scoped, system::events, _, EventsQuery, 200, _,
        "Server-sent events (resumable with ?since or Last-Event-ID); with follow=false, those recorded so far as a JSON array (1000 at most a page)"),
    (Get, "/v1/groups", Operator, system::groups, _, _, 200, _, "Groups with limits, totals and members"),
    (Post, "/v1/groups/{name}", Operator, system::put_group, GroupBody, _, 201, _, "Create a group"),
    (Put, "/v1/groups/{name}", Operator, system::put_group, GroupBody, _, 200, _, "Replace a group"),
    (Delete, "/v1/groups/{name}", Operator, system::delete_group, _, _, 204, _, "Delete a group without members"),
    (Get, "/v1/history", Scoped, system::history, _, HistoryQuery, 200, _, "Enforcement history with real outcomes"),
    (Get, "/v1/host", Operator, system::host, _, _, 200, _, "Host capacity: total, reserved, allocatable, available"),
    (Get, "/metrics", Operator, system::metrics, _, _, 200, _, "Prometheus metrics (OpenMetrics text)"),
];
