//! The route table: one list of every route with its method, path, access
//! rule and summary. It builds the router (each route behind its access
//! rule), the OpenAPI document, and the authorization test matrix, so a
//! route cannot be added without a rule.

use super::access::Access;
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
    /// What it does (and its body).
    pub summary: &'static str,
    handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

impl Route {
    /// The handler for this route's method.
    pub(super) fn method_router(&self) -> MethodRouter<Shared> {
        (self.handler)(self.method.filter())
    }
}

/// Table rows: `(METHOD, "path", Access, handler, "summary")`.
macro_rules! routes {
    ($(($method:ident, $path:literal, $access:ident, $handler:path, $summary:literal)),* $(,)?) => {
        &[$(Route { method: HttpMethod::$method, path: $path, access: Access::$access, summary: $summary, handler: |f| on(f, $handler) }),*]
    };
}

/// Every route of the API.
#[rustfmt::skip]
pub const ROUTES: &[Route] = routes![
    (Get, "/healthz", Anyone, system::healthz, "Liveness"),
    (Get, "/readyz", Anyone, system::readyz, "Readiness: the governor answers"),
    (Get, "/v1/openapi.json", Anyone, system::openapi, "This document"),
    (Get, "/v1/agents", Scoped, agents::list, "List agents with state, holders, pids, usage and quota"),
    (Post, "/v1/agents", Operator, agents::start, "Start a command as an agent: {name, group, command, priority?, limits?, env?, workdir?}"),
    (Get, "/v1/agents/{id}", SelfOrOperator, agents::one, "One agent"),
    (Delete, "/v1/agents/{id}", Operator, agents::terminate, "Stop an agent: notice, grace, kill"),
    (Post, "/v1/adopt", Operator, agents::adopt, "Adopt a running process: {name, group, pid, move?, priority?, limits?}"),
    (Post, "/v1/agents/{id}/suspend", Operator, agents::suspend, "Freeze the agent's tree (the operator's hold)"),
    (Post, "/v1/agents/{id}/resume", Operator, agents::resume,
        "Lift the operator's freeze and throttle; ?force=true lifts every holder's and the policy's pending escalations"),
    (Post, "/v1/agents/{id}/terminate", Operator, agents::terminate, "Notice, grace, kill"),
    (Post, "/v1/agents/{id}/throttle", Operator, agents::throttle, "Limit cpu (the operator's hold): ?cpu=200m"),
    (Post, "/v1/agents/{id}/clear", Operator, agents::clear, "Lift the operator's throttle"),
    (Get, "/v1/agents/{id}/quota", SelfOrOperator, agents::quota_get, "The agent's quota"),
    (Patch, "/v1/agents/{id}/quota", Operator, agents::quota_set, "Change limits at run time: {limits: {RESOURCE: {soft?, hard?, burst?, action?}}}"),
    (Post, "/v1/agents/{id}/usage", SelfOrOperator, agents::usage, "Report usage: {resource, value}"),
    (Post, "/v1/agents/{id}/reservations", SelfOrOperator, budgets::reserve,
        "Reserve custom resources at every budget that applies (agent, group, pools), all or nothing: {resources: {RESOURCE: amount}, ttl?}; 201, or 429 naming the level and resource with retry_after"),
    (Get, "/v1/agents/{id}/budgets", SelfOrOperator, budgets::agent, "The budgets that apply to the agent and its open reservations"),
    (Post, "/v1/reservations/{rid}/settle", Scoped, budgets::settle,
        "Settle a reservation with the actual amounts: {resources?: {RESOURCE: amount}} (unused part returned, overrun charged); an agent settles only its own"),
    (Delete, "/v1/reservations/{rid}", Scoped, budgets::release, "Release a reservation: everything it holds is returned; an agent releases only its own"),
    (Get, "/v1/budgets", Scoped, budgets::list, "Every budget (window, limit, spent, reserved, remaining, reset) and open reservation; an agent gets those that apply to it"),
    (Get, "/v1/pools/{name}", Operator, budgets::pool, "One pool's budgets and the reservations held there"),
    (Put, "/v1/pools/{name}", Operator, budgets::put_pool,
        "Declare or replace a pool's budgets: {RESOURCE: \"50M/day\" | {hard, soft?, per? | calendar?, day?, at?, tz?, on_expiry?}}"),
    (Delete, "/v1/pools/{name}", Operator, budgets::delete_pool, "Delete a pool declared through the API (refused while an agent draws on it)"),
    (Post, "/v1/agents/{id}/ack", SelfOrOperator, agents::ack, "Acknowledge a request of the agent channel: {seq, note?}"),
    (Get, "/v1/agents/{id}/compliance", SelfOrOperator, reads::compliance,
        "Quota compliance: per resource usage, soft, hard, burst, status (ok, soft, burst, hard), pending escalation and when it falls due; who holds the agent throttled or suspended"),
    (Get, "/v1/agents/{id}/analysis", SelfOrOperator, reads::analysis,
        "Pattern, forecast and recommendation of the agent's recorded samples: ?resource=memory&window=1h&horizon=10m"),
    (Get, "/v1/agents/{id}/recommendations", SelfOrOperator, reads::agent_recommendations, "The agent's latest recommendation per resource"),
    (Get, "/v1/agents/{id}/report", SelfOrOperator, reads::agent_report,
        "The agent's report: ?since=&until= (RFC 3339 times or durations ago; default the last hour) &format=json|text|svg|html"),
    (Get, "/v1/recommendations", Scoped, reads::recommendations, "The latest recommendation per agent and resource"),
    (Get, "/v1/report", Scoped, reads::fleet_report, "Every agent's report: ?since=&until=&format=json|text|svg|html"),
    (Get, "/v1/events", Scoped, system::events, "Server-sent events: ?since=SEQ&topic=GLOB, or Last-Event-ID; &follow=false: those recorded so far as a JSON array (1000 at most a page)"),
    (Get, "/v1/groups", Operator, system::groups, "Groups with limits, totals and members"),
    (Post, "/v1/groups/{name}", Operator, system::put_group, "Create a group: {extends?, description?, scaling_policy?, limits?, totals?}"),
    (Put, "/v1/groups/{name}", Operator, system::put_group, "Replace a group"),
    (Delete, "/v1/groups/{name}", Operator, system::delete_group, "Delete a group without members"),
    (Get, "/v1/history", Scoped, system::history, "Enforcement history with real outcomes (?agent=ID)"),
    (Get, "/v1/host", Operator, system::host, "Host capacity: total, reserved, allocatable, available"),
    (Get, "/metrics", Operator, system::metrics, "Prometheus metrics (OpenMetrics text)"),
];
